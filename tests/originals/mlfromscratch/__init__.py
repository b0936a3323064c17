"""ML-From-Scratch @ a2806c6: ``mlfromscratch/deep_learning`` and the CNN example."""
