"""The one exception type the project raises for anything a user can fix."""


class RplnError(Exception):
    """A problem with the input, the model choice or the environment, with a message a user can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
