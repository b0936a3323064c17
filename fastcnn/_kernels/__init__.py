"""The compiled kernel set, built from ``csrc/`` (see ``fastcnn._backend``)."""
