"""The base of every error camu raises for what its caller gave it (a scenario that cannot be cut from the
data, a data file in the wrong format, weights that are not safe to load): not a bug, so a command line reports
it as bad input. Its own module, importing nothing, so
that anyone can recognise these errors by class."""


class CamuInputError(ValueError):
    """A problem with the input camu was given; the message says what and how to fix it."""
