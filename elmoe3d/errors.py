"""The one exception type that means "the user asked for something wrong"."""


class UserError(ValueError):
    """A bad parameter, file or request: the CLI prints its message on one line, exit status 2.

    It subclasses ``ValueError`` so library callers can catch the usual type.
    """
