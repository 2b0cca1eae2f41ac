"""The one exception the CLI turns into exit 2. Kept free of numpy so the CLI can import it at start-up."""


class InputError(Exception):
    """The input is wrong; the message says what and where."""
