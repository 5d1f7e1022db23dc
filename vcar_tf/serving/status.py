"""The errors a served request ends with: a canonical status code (as TF Serving's) and one line."""

# canonical code -> HTTP status, as TF Serving's REST API maps them (RESOURCE_EXHAUSTED is a request
# over --max_request_bytes here, hence 413; DEADLINE_EXCEEDED a body too slow to arrive, 408; an
# overloaded server answers UNAVAILABLE, 503)
HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "DEADLINE_EXCEEDED": 408,  # the client did not send its body within --body_timeout_seconds
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}


class ServingError(Exception):
    """A request that cannot be answered; `code` is a canonical status code name (see HTTP_STATUS)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = " ".join(str(message).split())  # always one line

    @property
    def http_status(self):
        return HTTP_STATUS[self.code]


def invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message):
    return ServingError("NOT_FOUND", message)
