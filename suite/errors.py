"""User-facing errors: one line that says what is wrong and what to do."""


class SuiteError(Exception):
    """Bad input from the user (name, config value, plugin, data). The CLI prints it as one line
    and exits non-zero, before anything is written to the results store."""


class ConfigError(SuiteError):
    pass


class PluginError(SuiteError):
    pass


class DataError(SuiteError):
    pass


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
