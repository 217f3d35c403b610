"""API handlers of the local Batch service: parse the request, call the model, render the response.

No domain logic lives here: rules about entities are in the model (`model`, `validation`, `pool_views`). Each
handler is named in `routes.ROUTES` and reads its path parameters by the spec's names from `request.params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model.batch_state import BatchState
from ..model.errors import BatchError, PoolNotFound, TaskFilesUnavailable
from ..model.pool_views import supported_images_view
from ..model.validation import check_job_changes, check_task_collection, terminate_reason
from .conditions import check_entity_conditions, entity_headers
from .http_messages import Request, Response, error_body, json_response
from .node_files import file_response, list_files, recursive_flag
from .paging import cut_page, listing, projected, render_page, select_names


class BatchApi:
    """The Batch operations over one `BatchState`; each handler turns a Request into a Response."""

    def __init__(self, state: BatchState) -> None:
        self.state = state

    def entity(self, request: Request, entity: dict[str, Any], metadata_name: str) -> Response:
        not_modified = check_entity_conditions(request, entity, read=True)
        headers = entity_headers(entity)
        if not_modified:
            not_modified.headers = headers
            return not_modified
        select = request.query.get("$select")
        body = projected(dict(entity), request, select_names(select) if select else None)
        return json_response(200, {"odata.metadata": request.metadata(f"{metadata_name}/@Element"), **body}, headers)

    # -- applications -------------------------------------------------------------------------------------

    def list_applications(self, request: Request) -> Response:
        return listing(request, self.state.list_applications(), "applications")

    def get_application(self, request: Request) -> Response:
        return self.entity(request, self.state.get_application(request.params["applicationId"]), "applications")

    # -- pools and nodes ----------------------------------------------------------------------------------

    def list_pools(self, request: Request) -> Response:
        return listing(request, self.state.list_pools(), "pools")

    def get_pool(self, request: Request) -> Response:
        return self.entity(request, self.state.get_pool(request.params["poolId"]), "pools")

    def pool_exists(self, request: Request) -> Response:
        try:
            pool = self.state.get_pool(request.params["poolId"])
        except PoolNotFound:
            return Response(404)
        return Response(200, headers=entity_headers(pool))

    def create_pool(self, request: Request) -> Response:
        pool = self.state.add_pool(request.json_body("pool"))
        return Response(201, headers=entity_headers(pool, created=True))

    def _pool_change(self, request: Request, change, status: int = 202, body: bool = False) -> Response:
        """A pool operation with If-* conditions, answered with the pool's ETag, Last-Modified, DataServiceId."""
        pool_id = request.params["poolId"]
        check_entity_conditions(request, self.state.get_pool(pool_id), read=False)
        arguments = (pool_id, request.json_body("options")) if body else (pool_id,)
        change(*arguments)
        try:
            pool = self.state.get_pool(pool_id)
        except PoolNotFound:  # a pool with no nodes is gone at once after a delete
            return Response(status)
        return Response(status, headers=[*entity_headers(pool), ("DataServiceId", pool["url"])])

    def delete_pool(self, request: Request) -> Response:
        return self._pool_change(request, self.state.delete_pool)

    def resize_pool(self, request: Request) -> Response:
        return self._pool_change(request, self.state.resize_pool, body=True)

    def stop_pool_resize(self, request: Request) -> Response:
        return self._pool_change(request, self.state.stop_pool_resize)

    def enable_pool_autoscale(self, request: Request) -> Response:
        return self._pool_change(request, self.state.enable_pool_autoscale, status=200, body=True)

    def disable_pool_autoscale(self, request: Request) -> Response:
        return self._pool_change(request, self.state.disable_pool_autoscale, status=200)

    def evaluate_pool_autoscale(self, request: Request) -> Response:
        pool_id = request.params["poolId"]
        run = self.state.evaluate_pool_autoscale(pool_id, request.json_body("evaluate options"))
        pool = self.state.get_pool(pool_id)
        return json_response(200, {"odata.metadata": request.metadata("autoscalerun/@Element"), **run},
                             [*entity_headers(pool), ("DataServiceId", pool["url"])])

    def list_node_counts(self, request: Request) -> Response:
        return listing(request, self.state.list_node_counts(), "poolnodecounts")

    def list_supported_images(self, request: Request) -> Response:
        return listing(request, supported_images_view(self.state.list_pools()), "supportedimages")

    def list_nodes(self, request: Request) -> Response:
        return listing(request, self.state.list_nodes(request.params["poolId"]), "nodes")

    def get_node(self, request: Request) -> Response:
        return self.entity(request, self.state.get_node(request.params["poolId"], request.params["nodeId"]), "nodes")

    def list_node_files(self, request: Request) -> Response:
        return _files_listing(request, *self._node_files_root(request))

    def get_node_file(self, request: Request) -> Response:
        return file_response(request, *self._node_files_root(request), send_body=True)

    def get_node_file_properties(self, request: Request) -> Response:
        return file_response(request, *self._node_files_root(request), send_body=False)

    def _node_files_root(self, request: Request) -> tuple[Path, str]:
        node = self.state.get_node(request.params["poolId"], request.params["nodeId"])  # PoolNotFound / NodeNotFound
        return Path(self.state.node_dir(request.params["poolId"], request.params["nodeId"])), f"{node['url']}/files"

    # -- jobs ---------------------------------------------------------------------------------------------

    def list_jobs(self, request: Request) -> Response:
        return listing(request, self.state.list_jobs(), "jobs")

    def create_job(self, request: Request) -> Response:
        job = self.state.create_job(request.json_body("job"))
        return Response(201, headers=entity_headers(job, created=True))

    def get_job(self, request: Request) -> Response:
        return self.entity(request, self.state.get_job(request.params["jobId"]), "jobs")

    def update_job(self, request: Request) -> Response:
        changes = check_job_changes(request.json_body("job changes"))
        check_entity_conditions(request, self.state.get_job(request.params["jobId"]), read=False)
        job = self.state.update_job(request.params["jobId"], changes)
        return Response(200, headers=[*entity_headers(job), ("DataServiceId", job.get("url", ""))])

    def delete_job(self, request: Request) -> Response:
        job = self.state.get_job(request.params["jobId"])
        check_entity_conditions(request, job, read=False)
        self.state.delete_job(request.params["jobId"])
        return Response(202, headers=[("DataServiceId", job.get("url", ""))])

    def terminate_job(self, request: Request) -> Response:
        reason = terminate_reason(request.json_body("terminate options")) if request.body.strip() else None
        check_entity_conditions(request, self.state.get_job(request.params["jobId"]), read=False)
        self.state.terminate_job(request.params["jobId"], reason)
        job = self.state.get_job(request.params["jobId"])
        return Response(202, headers=[*entity_headers(job), ("DataServiceId", job.get("url", ""))])

    def job_task_counts(self, request: Request) -> Response:
        counts = self.state.job_task_counts(request.params["jobId"])
        return json_response(200, {"odata.metadata": request.metadata("taskcounts/@Element"), **counts})

    def job_prep_release_status(self, request: Request) -> Response:
        items = self.state.job_prep_release_status(request.params["jobId"])
        return listing(request, items, "jobpreparationandreleasetaskstatuslist")

    # -- tasks --------------------------------------------------------------------------------------------

    def create_task(self, request: Request) -> Response:
        task = self.state.add_task(request.params["jobId"], request.json_body("task"))
        return Response(201, headers=entity_headers(task, created=True))

    def list_tasks(self, request: Request) -> Response:
        page, more = self.state.list_task_page(request.params["jobId"], lambda tasks: cut_page(request, tasks))
        return render_page(request, page, more, "tasks")

    def add_task_collection(self, request: Request) -> Response:
        tasks = check_task_collection(request.json_body("task collection"))
        results = self.state.add_task_collection(request.params["jobId"], tasks)
        return json_response(200, {"odata.metadata": request.metadata("taskaddresult"),
                                   "value": task_add_results(results)})

    def get_task(self, request: Request) -> Response:
        return self.entity(request, self.state.get_task(request.params["jobId"], request.params["taskId"]), "tasks")

    def delete_task(self, request: Request) -> Response:
        job_id, task_id = request.params["jobId"], request.params["taskId"]
        check_entity_conditions(request, self.state.get_task(job_id, task_id), read=False)
        self.state.delete_task(job_id, task_id)
        return Response(200)

    def terminate_task(self, request: Request) -> Response:
        job_id, task_id = request.params["jobId"], request.params["taskId"]
        check_entity_conditions(request, self.state.get_task(job_id, task_id), read=False)
        self.state.terminate_task(job_id, task_id)
        task = self.state.get_task(job_id, task_id)
        return Response(204, headers=[*entity_headers(task), ("DataServiceId", task.get("url", ""))])

    def list_task_files(self, request: Request) -> Response:
        return _files_listing(request, *self._task_files_root(request))

    def get_task_file(self, request: Request) -> Response:
        return file_response(request, *self._task_files_root(request), send_body=True)

    def get_task_file_properties(self, request: Request) -> Response:
        return file_response(request, *self._task_files_root(request), send_body=False)

    def _task_files_root(self, request: Request) -> tuple[Path, str]:
        job_id, task_id = request.params["jobId"], request.params["taskId"]
        task = self.state.get_task(job_id, task_id)  # JobNotFound / TaskNotFound first
        root = self.state.task_dir(job_id, task_id)
        if root is None or not Path(root).is_dir():
            raise TaskFilesUnavailable(f"The task is {task.get('state', 'not started')} and has no files on a node yet.")
        return Path(root), f"{task['url']}/files"


def _files_listing(request: Request, root: Path, base_url: str) -> Response:
    return listing(request, list_files(root, base_url, recursive_flag(request)), "files")


def task_add_results(results: list[tuple[str, dict | BatchError]]) -> list[dict[str, Any]]:
    """BatchTaskCreateResult entries for the model's per-task outcomes of an add-collection."""
    rendered = []
    for task_id, outcome in results:
        if isinstance(outcome, BatchError):
            rendered.append({"status": "clienterror", "taskId": task_id, "error": error_body(outcome)})
        else:
            rendered.append({"status": "success", "taskId": outcome["id"], "eTag": outcome["eTag"],
                             "lastModified": outcome["lastModified"], "location": outcome["url"]})
    return rendered
