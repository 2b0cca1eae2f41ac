"""The one exception the CLI turns into exit 2. Kept free of numpy so the CLI can import it at start-up."""


class InputError(ValueError):
    """The input is wrong; the message says what and where.

    A ValueError, so that a caller of the Python API catches a bad value as Python code usually does; the
    command line catches it by name and exits 2 with its message.
    """
