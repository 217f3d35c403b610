"""Staging through Blob storage: the blob layout and node paths (`layout`), the local record (`record`) and the
transfers themselves (`blobs`)."""

from .blobs import Staging, make_blob_service
from .layout import BlobLayout, NodePaths, StagingError

__all__ = ["BlobLayout", "NodePaths", "Staging", "StagingError", "make_blob_service"]
