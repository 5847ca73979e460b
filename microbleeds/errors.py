"""Errors raised for bad input: each names the file and the problem in one line."""


class InputError(ValueError):
    """A scan, mask, phase or label file that cannot be used.

    The message is one sentence naming the file and the problem, fit to print as is.
    """

    def __init__(self, path, problem):
        self.path = str(path) if path is not None else "<array>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
