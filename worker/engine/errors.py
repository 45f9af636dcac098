"""The one error type the engine raises for problems a user can act on."""

ERROR_CODES = (
    "invalid_model",
    "invalid_dataset",
    "input_mismatch",
    "class_mismatch",
    "invalid_student",
    "invalid_config",
    "cancelled",
    "internal",
)


class EngineError(Exception):
    """A failure a user can act on."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
