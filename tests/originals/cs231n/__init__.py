"""CS231n assignment 2 (2023): the parts of ``cs231n/`` a ConvNet uses."""
