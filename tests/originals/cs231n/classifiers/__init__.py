"""CS231n classifiers."""
