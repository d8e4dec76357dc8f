"""An Ansible callback for swcmp's tests: every task result and the recap as JSON lines.

Enabled by tests/integration/test_ansible.py (ANSIBLE_CALLBACK_PLUGINS and
ANSIBLE_CALLBACKS_ENABLED); writes to the file named by SWCMP_ANSIBLE_RECORD, beside the
default output, which stays the play log the test greps.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "swcmp_record"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, item: dict[str, Any]) -> None:
        with open(os.environ["SWCMP_ANSIBLE_RECORD"], "a") as f:
            f.write(json.dumps(item, default=str) + "\n")

    def _result(self, status: str, result: Any) -> None:
        self._write({"host": result._host.get_name(), "task": result._task.get_name(),
                     "action": result._task.action, "status": status,
                     "result": dict(result._result)})

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("failed", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._write({"recap": {h: stats.summarize(h) for h in sorted(stats.processed)}})
