"""X-VLM, the deployable student, and the CPFD loss. Never imports `teacher`."""
