"""Tests of the policy language (gate/policy) and the policy packs (policies/)."""
