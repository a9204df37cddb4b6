"""tf-grader: autograded TensorFlow/Keras practicals and a sandboxed batch grader.

Public surface: :func:`check` (the in-notebook self-check) and ``__version__``.
Everything else is reached through the ``grader`` command line.
"""

__version__ = "0.1.0"
__all__ = ["check", "__version__"]


def check(question=None, *, assignment=None):
    """Run the public checks of ``question`` (all when omitted) on this notebook's state."""
    from .selfcheck import check_in_notebook

    return check_in_notebook(question, assignment=assignment)
