"""The core a subscriber is written against, with no Lightning import.

    bus            `Bus`: typed subscribe/publish over blinker, filters, failure policy
    events         the event catalogue, the table of contents of a run
    context        `RunContext`: what the run is and how far it got
    layout         `RunLayout`: every path of a run directory, named in one place
    summary        `RunSummary`: the run's record (``summary.json``), its status, `Failure`
    spec           `SubscriberSpec` and `SubscriberSettings`: how a table becomes a subscriber
    options        `option` and validators for typed settings; `read_table` checks a table
    distributed    `all_sum` / `all_gather`: per-process counts combined under DDP
    preprocessing  `Preprocessing`: what a model expects of an image (torch-free)
    errors         the harness's exceptions and their exit codes (torch-free)
    testing        a kit for subscriber authors: contexts, events, scripted runs and
                   validations, a plugin's settings checked

Its modules are imported by name (``from harness.core.bus import Bus``): importing this
package imports none of them, so the torch-free ones stay torch-free.
"""

__all__ = [
    "bus",
    "context",
    "distributed",
    "errors",
    "events",
    "layout",
    "options",
    "preprocessing",
    "spec",
    "summary",
    "testing",
]
