"""The one exception type for bad ECG input: it always names the file and the problem."""
from ecgjax.errors import UserError


class ECGInputError(UserError):
    """A record that cannot be used as it is.

    Raised with the offending path (or record id) and a plain description of the problem,
    so that a long ingest can log it to the rejected-records manifest and go on.
    """

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
