"""gradstep: logistic regression by gradient descent, vanilla, normalized and adaptive steps."""

__version__ = "0.1.0"
