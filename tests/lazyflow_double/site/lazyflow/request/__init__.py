from lazyflow.request.request import Request, RequestPool

__all__ = ["Request", "RequestPool"]
