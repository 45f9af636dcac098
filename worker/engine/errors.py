"""The one error type the engine raises for problems a user can act on."""


class EngineError(Exception):
    """A failure a user can act on; `code` is one of contract.ErrorCode (invalid_config, non_finite, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
