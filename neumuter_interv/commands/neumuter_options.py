"""Options of NeuMuter's run that ``demo`` and ``compare`` share."""

from __future__ import annotations


def add_anchors_argument(parser) -> None:
    """``--anchors N``: NeuMuter's KL anchors per forget sample (``DemoConfig.anchors_per_sample``)."""
    parser.add_argument("--anchors", type=int, default=0, metavar="N",
                        help="add N other memorized windows to each forget sample's neighbours in NeuMuter's KL term "
                             "(never the scored retain windows; the run is then marked with a dagger, as it uses "
                             "retained text)")
