"""Staging through Blob storage: the blob layout and node paths (`layout`), the local record (`record`) and the
transfers themselves (`blobs`)."""

from .blobs import Staging, make_blob_service
from . import node_commands
from .layout import BlobLayout, NodePaths, StagingError

__all__ = ["node_commands", "BlobLayout", "NodePaths", "Staging", "StagingError", "make_blob_service"]
