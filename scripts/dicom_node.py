"""A DICOM node that segments every image series it receives and sends the SEG on.

A thin wrapper of the ``litenext-dicom-node`` console script
(:mod:`litenext_monai.dicom_node.cli`); see ``--help``, docs/dicom-node.md and
docs/dicom-node-pipeline.md. Usage::

    python scripts/dicom_node.py --ae-title LITENEXT --port 11112 \\
        --destination ORTHANC@pacs.example.org:4242 --checkpoint models/model.pt \\
        --storage /var/lib/litenext-node --allow ORTHANC@10.1.2.3 [--series-timeout 60]
    python scripts/dicom_node.py status --storage /var/lib/litenext-node
    python scripts/dicom_node.py requeue JOB_ID --storage /var/lib/litenext-node
"""

from __future__ import annotations

import sys

from litenext_monai.dicom_node.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
