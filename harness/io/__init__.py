"""Input and output: files written whole or not at all, the event record, the background writer.

    artifacts           atomic writes of pictures, tables, JSON and the label map
    record              `events.jsonl`, written and read back
    background          `BackgroundWriter`: pictures drawn in a worker process
    _background_worker  that worker's program
    images              image files read as RGB the one shared way (torch-free)
    image_tree          an ImageFolder tree's split and class folders, found one way
    tables              `Table`: a subscriber's section of the report page, typed
    report_page         the run's HTML page

Its modules are imported by name; importing this package imports none of them.
"""

__all__ = ["artifacts", "background", "image_tree", "images", "record", "report_page", "tables"]
