"""The tracker's documented input errors: one type, so callers can tell bad input from a failure."""


class TrackerInputError(ValueError):
    """Input the tracker refuses (image type, mask size or type, unknown or out-of-range object ids, more
    objects than `max_objects`), raised before any state changes: nothing accepted before is lost."""
