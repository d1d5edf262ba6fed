"""ComfyUI workflows in the API format ("Save (API Format)"), as in ComfyUI's
``script_examples/basic_api_example.py``, plus img2img, inpaint and face-node variants."""

from __future__ import annotations

import copy
from typing import Any

BASIC: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0],
        "negative": ["7", 0], "positive": ["6", 0], "sampler_name": "euler",
        "scheduler": "normal", "seed": 8566257, "steps": 20}},
    "4": {"class_type": "CheckpointLoaderSimple",
          "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage",
          "inputs": {"batch_size": 1, "height": 512, "width": 512}},
    "6": {"class_type": "CLIPTextEncode",
          "inputs": {"clip": ["4", 1], "text": "masterpiece best quality landscape"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage",
          "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def txt2img(text: str = "masterpiece best quality landscape") -> dict[str, Any]:
    graph = copy.deepcopy(BASIC)
    graph["6"]["inputs"]["text"] = text
    return graph


def img2img(image: str) -> dict[str, Any]:
    graph = copy.deepcopy(BASIC)
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": image, "upload": "image"}}
    graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"]["latent_image"] = ["11", 0]
    graph["3"]["inputs"]["denoise"] = 0.6
    return graph


def inpaint(image: str, mask: str) -> dict[str, Any]:
    graph = img2img(image)
    graph["12"] = {"class_type": "LoadImageMask",
                   "inputs": {"image": mask, "channel": "alpha"}}
    graph["13"] = {"class_type": "SetLatentNoiseMask",
                   "inputs": {"samples": ["11", 0], "mask": ["12", 0]}}
    graph["3"]["inputs"]["latent_image"] = ["13", 0]
    return graph


def reactor(target: str, source: str) -> dict[str, Any]:
    graph = copy.deepcopy(BASIC)
    graph["20"] = {"class_type": "LoadImage", "inputs": {"image": target}}
    graph["21"] = {"class_type": "LoadImage", "inputs": {"image": source}}
    graph["22"] = {"class_type": "ReActorFaceSwap", "inputs": {
        "enabled": True, "input_image": ["20", 0], "source_image": ["21", 0],
        "swap_model": "inswapper_128.onnx", "facedetection": "retinaface_resnet50",
        "face_restore_model": "none", "face_restore_visibility": 1,
        "codeformer_weight": 0.5, "detect_gender_input": "no",
        "detect_gender_source": "no", "input_faces_index": "0",
        "source_faces_index": "0", "console_log_level": 1}}
    graph["9"]["inputs"]["images"] = ["22", 0]
    return graph


def faceid(face: str) -> dict[str, Any]:
    graph = copy.deepcopy(BASIC)
    graph["30"] = {"class_type": "LoadImage", "inputs": {"image": face}}
    graph["31"] = {"class_type": "IPAdapterUnifiedLoaderFaceID", "inputs": {
        "model": ["4", 0], "preset": "FACEID PLUS V2", "lora_strength": 0.6,
        "provider": "CPU"}}
    graph["32"] = {"class_type": "IPAdapterFaceID", "inputs": {
        "model": ["31", 0], "ipadapter": ["31", 1], "image": ["30", 0], "weight": 1.0,
        "weight_faceidv2": 1.0, "weight_type": "linear", "combine_embeds": "concat",
        "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only"}}
    graph["3"]["inputs"]["model"] = ["32", 0]
    return graph


def instantid(face: str, pose: str) -> dict[str, Any]:
    graph = copy.deepcopy(BASIC)
    graph["40"] = {"class_type": "LoadImage", "inputs": {"image": face}}
    graph["41"] = {"class_type": "LoadImage", "inputs": {"image": pose}}
    graph["42"] = {"class_type": "InstantIDModelLoader",
                   "inputs": {"instantid_file": "ip-adapter.bin"}}
    graph["43"] = {"class_type": "InstantIDFaceAnalysis", "inputs": {"provider": "CPU"}}
    graph["44"] = {"class_type": "ApplyInstantID", "inputs": {
        "instantid": ["42", 0], "insightface": ["43", 0], "control_net": ["45", 0],
        "image": ["40", 0], "image_kps": ["41", 0], "model": ["4", 0],
        "positive": ["6", 0], "negative": ["7", 0], "weight": 0.8, "start_at": 0,
        "end_at": 1}}
    graph["45"] = {"class_type": "ControlNetLoader",
                   "inputs": {"control_net_name": "instantid/diffusion_pytorch_model.safetensors"}}
    graph["3"]["inputs"]["positive"] = ["44", 1]
    graph["3"]["inputs"]["negative"] = ["44", 2]
    return graph


def pulid(face: str) -> dict[str, Any]:
    graph = copy.deepcopy(BASIC)
    graph["50"] = {"class_type": "LoadImage", "inputs": {"image": face}}
    graph["51"] = {"class_type": "PulidModelLoader",
                   "inputs": {"pulid_file": "ip-adapter_pulid_sdxl_fp16.safetensors"}}
    graph["52"] = {"class_type": "ApplyPulid", "inputs": {
        "model": ["4", 0], "pulid": ["51", 0], "image": ["50", 0], "method": "fidelity",
        "weight": 1.0, "start_at": 0, "end_at": 1}}
    graph["3"]["inputs"]["model"] = ["52", 0]
    return graph
