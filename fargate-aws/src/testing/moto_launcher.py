# moto_server with the changes the fargate tests need (moto 5.2.5). Written to a temporary
# directory and run by fargate_aws::testing::Moto as:
#   MOTO_ECS_TASK_CIDR=127.77.3.0/24 FGT_MOTO_DIR=/tmp/x python moto_launcher.py -H 127.0.0.1 -p PORT
#
# 1. ECS task ENIs get loopback IPs, in order, from MOTO_ECS_TASK_CIDR (moto would give a
#    random 10.x address), so a test sshd can listen at the address a task reports.
# 2. Tasks stay RUNNING (moto advances a task one status per DescribeTasks by default).
# 3. RunTask honours clientToken like ECS: the same token returns the first call's tasks.
# 4. Every RunTask request is appended to $FGT_MOTO_DIR/run_task.jsonl with the task ARNs,
#    so tests can check fields moto does not keep (clientToken, enableExecuteCommand...).
# 5. When $FGT_MOTO_DIR/provisioning_describes holds K > 0, new tasks report PROVISIONING
#    then PENDING for their first K DescribeTasks before RUNNING.
import ipaddress
import json
import os
import sys
import threading

import moto.ecs.models as ecs_models
import moto.ecs.responses as ecs_responses
from moto.moto_api import state_manager

_dir = os.environ.get("FGT_MOTO_DIR", ".")
_lock = threading.RLock()
_hosts = ipaddress.ip_network(os.environ.get("MOTO_ECS_TASK_CIDR", "127.77.0.0/24")).hosts()


def _next_ip(*_args, **_kwargs):
    with _lock:
        return str(next(_hosts))


ecs_models.random_private_ip = _next_ip
state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})


def _provisioning_describes():
    try:
        with open(os.path.join(_dir, "provisioning_describes")) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


_task_init = ecs_models.Task.__init__


def _init(self, *args, **kwargs):
    _task_init(self, *args, **kwargs)
    boot = _provisioning_describes()
    self._fgt_boot_total = boot
    self._fgt_boot_left = boot
    if boot > 0:
        self._status = "PROVISIONING"


ecs_models.Task.__init__ = _init

_describe_tasks = ecs_models.EC2ContainerServiceBackend.describe_tasks


def _describe(self, cluster_str, tasks):
    found = _describe_tasks(self, cluster_str, tasks)
    for task in found:
        left = getattr(task, "_fgt_boot_left", 0)
        if task._status not in ("PROVISIONING", "PENDING"):
            continue
        if left <= 0:
            task._status = "RUNNING"
            task._tick = 0
        else:
            done = task._fgt_boot_total - left
            task._status = "PROVISIONING" if done < (task._fgt_boot_total + 1) // 2 else "PENDING"
            task._fgt_boot_left = left - 1
    return found


ecs_models.EC2ContainerServiceBackend.describe_tasks = _describe

_tokens = {}
_run_task = ecs_responses.EC2ContainerServiceResponse.run_task


def _run(self):
    token = self._get_param("clientToken")
    key = (self.current_account, self.region, token)
    with _lock:
        if token and key in _tokens:
            arns = _tokens[key]
            tasks = [
                t
                for cluster_tasks in self.ecs_backend.tasks.values()
                for arn, t in cluster_tasks.items()
                if arn in arns
            ]
            replay = bool(tasks)  # after /moto-api/reset the old tasks are gone
        else:
            replay = False
        if replay:
            result = ecs_responses.ActionResult({"tasks": tasks, "failures": []})
        else:
            result = _run_task(self)
        arns = [t.task_arn for t in result.result["tasks"]]
        if token and not replay:
            _tokens[key] = arns
        with open(os.path.join(_dir, "run_task.jsonl"), "a") as f:
            f.write(json.dumps({"request": json.loads(self.body or "{}"), "taskArns": arns,
                                "replay": replay}) + "\n")
    return result


ecs_responses.EC2ContainerServiceResponse.run_task = _run

from moto.server import main  # noqa: E402

sys.exit(main())
