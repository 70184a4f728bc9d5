"""The one exception type that means "the user asked for something wrong"."""


class UserError(ValueError):
    """A bad parameter, file or request: the CLI prints its message on one line, exit status 2.

    It subclasses ``ValueError`` so library callers can catch the usual type.
    """


def check_int(name, value, lo, hi):
    """Refuse a parameter that is not an integer in ``[lo, hi]`` (a ``UserError`` naming it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise UserError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value
