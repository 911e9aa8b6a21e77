"""DF-X-VLM, the teacher: X-VLM plus a dense-feature branch over the privileged features."""
