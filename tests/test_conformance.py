"""Snakemake's own executor conformance suite, with executor `azbatch` against the local service and no shared
filesystem: every input, source and output travels through Blob storage."""

from __future__ import annotations

from typing import Optional

import pytest
from snakemake.common.tests import TestWorkflowsLocalStorageBase
from snakemake.settings import types as settings
from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from snakemake_executor_plugin_azbatch import ExecutorSettings


class TestAzbatchConformance(TestWorkflowsLocalStorageBase):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _service(self, local_service):
        self.service = local_service

    def get_executor(self) -> str:
        return "azbatch"

    def get_assume_shared_fs(self) -> bool:
        return False

    def get_executor_settings(self) -> Optional[ExecutorSettingsBase]:
        env = self.service.env
        return ExecutorSettings(
            account_url=env["SNAKEMAKE_AZBATCH_ACCOUNT_URL"],
            account_name=env["SNAKEMAKE_AZBATCH_ACCOUNT_NAME"],
            account_key=env["SNAKEMAKE_AZBATCH_ACCOUNT_KEY"],
            pool_id=env["SNAKEMAKE_AZBATCH_POOL_ID"],
            storage_connection_string=env["SNAKEMAKE_AZBATCH_STORAGE_CONNECTION_STRING"],
            storage_container="conformance",
            status_interval=0.5,
        )

    def get_remote_execution_settings(self) -> settings.RemoteExecutionSettings:
        return settings.RemoteExecutionSettings(seconds_between_status_checks=1, envvars=self.get_envvars())
