# moto_server with the changes the fargate tests need (moto 5.2.5 only: the patches replace
# response handlers and backend methods of that version). Written to a temporary directory and
# run by fargate_aws::testing::Moto as:
#   MOTO_ECS_TASK_CIDR=127.77.3.0/24 FGT_MOTO_DIR=/tmp/x python moto_launcher.py -H 127.0.0.1 -p PORT
#
# 1. ECS task ENIs get loopback IPs, in order, from MOTO_ECS_TASK_CIDR (moto would give a
#    random 10.x address), so a test sshd can listen at the address a task reports.
# 2. Tasks stay RUNNING (moto advances a task one status per DescribeTasks by default).
# 3. RunTask honours clientToken like ECS: the same token (in the same cluster) with the same
#    request returns the first call's tasks; the same token with another request is refused
#    with ConflictException.
# 4. Every RunTask request is appended to $FGT_MOTO_DIR/run_task.jsonl with the task ARNs,
#    so tests can check fields moto does not keep (clientToken, enableExecuteCommand...).
# 5. When $FGT_MOTO_DIR/provisioning_describes holds K > 0, new tasks report PROVISIONING
#    then PENDING for their first K DescribeTasks before RUNNING.
# 6. Eventual consistency: when $FGT_MOTO_DIR/visibility_lag holds S > 0 (seconds), a task is
#    unknown to DescribeTasks (failures[] MISSING), ListTasks and StopTask ("not found") for
#    S seconds after its RunTask, unless StopTask stopped it. Requests signed with access key id ORACLE_KEY see
#    everything at once.
# 7. DescribeTasks answers unknown tasks with a MISSING failure, like ECS.
# 8. ECS's parameter rules, refused with ECS's exceptions (HTTP 400): ListTasks filters and
#    pagination, RunTask startedBy/clientToken/tags/overrides/count, DescribeTasks 100 tasks,
#    StopTask of an unknown task and reason length, Fargate CPU/memory combinations.
# 9. Tasks carry createdAt/pullStartedAt/pullStoppedAt/startedAt/stoppingAt/stoppedAt,
#    stopCode, cpu, memory, availabilityZone, ephemeralStorage, the resolved platformVersion
#    and the ecs.cpu-architecture attribute like ECS's.
# 10. Capacity faults: a RunTask placed on a capacity provider listed in
#    $FGT_MOTO_DIR/no_capacity (one name a line, e.g. FARGATE_SPOT) answers a failures[]
#    entry with ECS's "Capacity is unavailable at this time..." and starts nothing. Task ARNs
#    listed in $FGT_MOTO_DIR/spot_interrupt are stopped as a Fargate Spot interruption
#    (stopCode SpotInterruption, "Your Spot Task was interrupted.") when next described,
#    if they run on FARGATE_SPOT. When $FGT_MOTO_DIR/capacity_tasks holds N, RunTask starts at
#    most N more tasks in all (N goes down as they start): a call whose `count` is over what
#    is left starts what is left and answers one capacity failures[] entry per task it did
#    not start (a partial answer, as ECS gives when it places only some of a call's tasks).
# 11. RunTask task-level overrides (cpu, memory, ephemeralStorage) follow the Fargate size
#    rules, and the task reports them as its cpu and memory.
# 12. Task definitions of job images: RegisterTaskDefinition's family, container names,
#    1-10 containers, an essential one, dependsOn targets and conditions, mount volumes and
#    awsvpc ports, container secrets (name, valueFrom, an execution role), the tag rules of RunTask; a second registration of a family while one is under way is refused
#    (hold each registration $FGT_MOTO_DIR/register_hold seconds to provoke it);
#    DescribeTaskDefinition of a family names its latest ACTIVE revision; RunTask refuses an
#    INACTIVE revision.
# 13. TagResource and UntagResource: the tag rules of RunTask (TagResource), at most 50 tags
#    per resource after the merge (keys with the `aws:` prefix do not count), and an unknown
#    task or task definition ARN is ResourceNotFoundException (moto: HTTP 500).
# 14. Throttling like ECS's token buckets, when $FGT_MOTO_DIR/throttle holds a JSON object of
#    buckets, each [refill per second, bucket size]: an action name ("RunTask", "StopTask",
#    "TagResource"...) counts its calls, "FargateTasks" counts the tasks RunTask starts
#    (its `count`). ECS's published figures: {"RunTask": [20, 20], "FargateTasks": [20, 100]}.
#    A call over a bucket fails with ThrottlingException "Rate exceeded" (HTTP 400) and
#    changes nothing; each is appended to $FGT_MOTO_DIR/throttled.jsonl. Oracle requests are
#    never throttled.
# 15. DynamoDB item operations are atomic like DynamoDB's: moto's threaded server evaluates a
#    conditional UpdateItem's condition and applies its update without a lock, so two
#    concurrent writes conditioned on the same version could both succeed (a lost update
#    DynamoDB never allows). Each item operation of the backend runs under one lock here.
# 16. Private registries: $FGT_MOTO_DIR/private_registries lists "<host> <username> <password>"
#    a line, the logins such a registry accepts. A new task with a container whose image
#    comes from such a host (the part of the name before the first "/" when it has a "." or
#    ":" or is "localhost"; else docker.io) pulls only when its
#    repositoryCredentials.credentialsParameter names a Secrets Manager secret (ARN or
#    name, read as the execution role would) holding {"username", "password"} of such a
#    login. Otherwise it fails to start like ECS: STOPPED, stopCode TaskFailedToStart,
#    pull times set, never started, with stoppedReason (and the container's reason)
#    "CannotPullContainerError: ... 401 Unauthorized" (no credentials, or a wrong login),
#    or, when the secret does not exist (deleted, never made), the task's stoppedReason
#    "ResourceInitializationError: unable to pull secrets or registry auth: ...".
# See docs/ecs-api-rules.md for every rule and its source.
import base64
import ipaddress
import json
import os
import re
import sys
import threading
import time
import unicodedata

import moto.ecs.models as ecs_models
import moto.ecs.responses as ecs_responses
from moto.core.utils import utcnow
from moto.ecs.exceptions import ECSException, InvalidParameterException
from moto.moto_api import state_manager

ORACLE_KEY = "fgt-oracle"

_dir = os.environ.get("FGT_MOTO_DIR", ".")
_lock = threading.RLock()
_hosts = ipaddress.ip_network(os.environ.get("MOTO_ECS_TASK_CIDR", "127.77.0.0/24")).hosts()
_Response = ecs_responses.EC2ContainerServiceResponse


def _next_ip(*_args, **_kwargs):
    with _lock:
        return str(next(_hosts))


ecs_models.random_private_ip = _next_ip
state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})


def _control(name, parse, default):
    try:
        with open(os.path.join(_dir, name)) as f:
            return parse(f.read().strip() or default)
    except (OSError, ValueError):
        return default


def _set_control(name, value):
    with open(os.path.join(_dir, name), "w") as f:
        f.write(value)


def _capacity_tasks():
    """How many more tasks RunTask may start (None: no limit)."""
    return _control("capacity_tasks", int, None)


def _provisioning_describes():
    return _control("provisioning_describes", int, 0)


def _visibility_lag():
    return max(0.0, _control("visibility_lag", float, 0.0))


def _invalid(message):
    return InvalidParameterException(message)


def _is_oracle(response):
    """Whether the request is signed with the oracle's access key id (SigV4 Credential=)."""
    auth = response.headers.get("Authorization") or ""
    match = re.search(r"Credential=([^/,\s]+)/", auth)
    return bool(match) and match.group(1) == ORACLE_KEY


def _lagged(task):
    """Whether ECS would not know `task` yet (outside the oracle view)."""
    if getattr(task, "_fgt_stopped_by_api", False):
        return False
    return time.monotonic() < getattr(task, "_fgt_visible_at", 0.0)


def _find_task(cluster_tasks, ident):
    """The task of one cluster that `ident` (full ARN or task id) names, or None."""
    if not ident:
        return None
    for arn, task in cluster_tasks.items():
        if ident == arn or ident == task.id:
            return task
    return None


def _cluster_tasks(response, cluster_str):
    cluster = response.ecs_backend._get_cluster(cluster_str)  # ClusterNotFoundException
    return cluster, response.ecs_backend.tasks.get(cluster.name, {})


# --- Task: provisioning phase, visibility lag, timestamps ---------------------------------

_task_init = ecs_models.Task.__init__


def _availability_zone(task):
    try:
        subnet = task.network_configuration["awsvpcConfiguration"]["subnets"][0]
        ec2 = ecs_models.ec2_backends[task._account_id][task.region_name]
        return ec2.get_subnet(subnet).availability_zone
    except Exception:  # noqa: BLE001 - best effort, like moto's own optional fields
        return None


def _mark_pulling(task):
    task.pull_started_at = getattr(task, "pull_started_at", None) or utcnow()


def _mark_running(task):
    _mark_pulling(task)
    now = utcnow()
    task.pull_stopped_at = getattr(task, "pull_stopped_at", None) or now
    task.started_at = getattr(task, "started_at", None) or now


def _cpu_architecture(definition):
    platform = getattr(definition, "runtime_platform", None) or {}
    return (platform.get("cpuArchitecture") or "X86_64").lower()


def _ephemeral_gib(task):
    overrides = task.overrides or {}
    storage = overrides.get("ephemeralStorage") or {}
    return int(storage.get("sizeInGiB") or 20)


def _registry_host(image):
    first, slash, _ = (image or "").partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return "docker.io" if first.lower() == "index.docker.io" else first.lower()
    return "docker.io"


def _private_registries():
    """{host: [(username, password), ...]}: the logins each private registry accepts."""
    out = {}
    for line in _control("private_registries", str.splitlines, []):
        parts = line.split()
        if len(parts) == 3:
            out.setdefault(parts[0].lower(), []).append((parts[1], parts[2]))
    return out


def _registry_login(task, secret_id):
    """(username, password) held by Secrets Manager secret `secret_id` (ARN or name) of the
    task's account and region, as ECS's agent reads it for repositoryCredentials; None when
    there is no such secret (or it is deleted, or holds no such JSON)."""
    from moto.secretsmanager.models import secretsmanager_backends

    try:
        backend = secretsmanager_backends[task._account_id][task.region_name]
        value = backend.get_secret_value(secret_id, None, None)
        doc = json.loads(value.get("SecretString") or "")
        return (doc.get("username"), doc.get("password"))
    except Exception:  # noqa: BLE001 - any failure to read is ECS's retrieval failure
        return None


def _fail_to_start(task, reason, container_name):
    now = utcnow()
    task._status = "STOPPED"
    task._tick = 0
    task.desired_status = "STOPPED"
    task.stop_code = "TaskFailedToStart"
    task.stopped_reason = reason
    task.pull_started_at = now
    task.pull_stopped_at = now
    task.stopping_at = now
    task.stopped_at = now
    task.execution_stopped_at = now
    for container in task.containers:
        container.last_status = "STOPPED"
        if container_name is not None and container.name == container_name:
            container.reason = reason


def _refuse_pull(task, definition):
    """Stops `task` as ECS does when a private registry refuses a pull: a container of a
    private host without repositoryCredentials, with a secret that does not exist, or
    with a secret holding a login the registry does not accept."""
    private = _private_registries()
    for cd in definition.container_definitions:
        image = cd.get("image") or ""
        host = _registry_host(image)
        accepted = private.get(host)
        if accepted is None:
            continue
        given = (cd.get("repositoryCredentials") or {}).get("credentialsParameter")
        if given:
            login = _registry_login(task, given)
            if login is None:
                _fail_to_start(
                    task,
                    "ResourceInitializationError: unable to pull secrets or registry auth: "
                    "execution resource retrieval failed: unable to get registry auth from asm: "
                    "service call has been retried 1 time(s): asm fetching secret from the "
                    f"service for {given}: ResourceNotFoundException: Secrets Manager can't "
                    "find the specified secret.",
                    None,
                )
                return True
            if login in accepted:
                continue
            reason = (
                "CannotPullContainerError: pull image manifest has been retried 1 time(s): "
                f"failed to resolve ref {image}: failed to authorize: failed to fetch oauth "
                f"token: unexpected status from GET request to https://{host}/jwt/auth: "
                "401 Unauthorized"
            )
        else:
            reason = (
                "CannotPullContainerError: pull image manifest has been retried 1 time(s): "
                f"failed to resolve ref {image}: failed to authorize: failed to fetch anonymous "
                f"token: unexpected status from GET request to https://{host}/jwt/auth: "
                "401 Unauthorized"
            )
        _fail_to_start(task, reason, cd.get("name"))
        return True
    return False


def _init(self, *args, **kwargs):
    _task_init(self, *args, **kwargs)
    definition = kwargs.get("task_definition") or (args[1] if len(args) > 1 else None)
    self.created_at = utcnow()
    self.cpu = getattr(definition, "cpu", None)
    self.memory = getattr(definition, "memory", None)
    self.availability_zone = _availability_zone(self)
    if _launch_type(self) == "FARGATE":
        # ECS reports the version it resolved, the storage the task has and its architecture.
        if self.platform_version in (None, "", "LATEST"):
            self.platform_version = "1.4.0"
        self.ephemeral_storage = {"sizeInGiB": _ephemeral_gib(self)}
        self.attributes = [{"name": "ecs.cpu-architecture", "value": _cpu_architecture(definition)}]
    # ECS reports every container of the task; moto only the first definition's.
    if definition is not None and len(definition.container_definitions) > 1:
        containers = []
        for cd in definition.container_definitions:
            container = ecs_models.Container(definition)
            container.name = cd.get("name")
            container.image = cd.get("image")
            container.last_status = "RUNNING"
            containers.append(container)
        self.containers = containers
    self._fgt_visible_at = time.monotonic() + _visibility_lag()
    if definition is not None and _refuse_pull(self, definition):
        return
    boot = _provisioning_describes()
    self._fgt_boot_total = boot
    self._fgt_boot_left = boot
    if boot > 0:
        self._status = "PROVISIONING"
    else:
        _mark_running(self)


ecs_models.Task.__init__ = _init

_describe_tasks = ecs_models.EC2ContainerServiceBackend.describe_tasks


def _note_progress(task):
    """Timestamps and stop code for a task that moto's state machine moved on."""
    status = task.status  # applies the pending transition, as serializing it would
    if status in ("DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"):
        if not getattr(task, "stopping_at", None):
            task.stopping_at = utcnow()
        if not getattr(task, "stop_code", None):
            task.stop_code = "EssentialContainerExited"
    if status == "STOPPED":
        if not getattr(task, "stopped_at", None):
            task.stopped_at = utcnow()
            task.execution_stopped_at = task.stopped_at


def _spot_interrupt(task):
    """Stops `task` as Fargate Spot does when it takes the capacity back."""
    now = utcnow()
    task._status = "STOPPED"
    task._tick = 0
    task.desired_status = "STOPPED"
    task.stop_code = "SpotInterruption"
    task.stopped_reason = "Your Spot Task was interrupted."
    task.stopping_at = getattr(task, "stopping_at", None) or now
    task.stopped_at = getattr(task, "stopped_at", None) or now
    task.execution_stopped_at = task.stopped_at


def _describe(self, cluster_str, tasks):
    found = _describe_tasks(self, cluster_str, tasks)
    interrupt = set(_control("spot_interrupt", str.split, ""))
    for task in found:
        if (
            task.task_arn in interrupt
            and task.capacity_provider_name == "FARGATE_SPOT"
            and task.desired_status != "STOPPED"
        ):
            _spot_interrupt(task)
            continue
        left = getattr(task, "_fgt_boot_left", 0)
        if task._status in ("PROVISIONING", "PENDING"):
            if left <= 0:
                task._status = "RUNNING"
                task._tick = 0
                _mark_running(task)
            else:
                done = task._fgt_boot_total - left
                task._status = "PROVISIONING" if done < (task._fgt_boot_total + 1) // 2 else "PENDING"
                if task._status == "PENDING":
                    _mark_pulling(task)
                task._fgt_boot_left = left - 1
        _note_progress(task)
    return found


ecs_models.EC2ContainerServiceBackend.describe_tasks = _describe

# --- RunTask: parameter rules, client tokens, request log ----------------------------------

_STARTED_BY = re.compile(r"[A-Za-z0-9_/-]*")
_TAG_PUNCTUATION = set("_.:/=+-@")


def _tag_text_ok(text):
    return all(
        unicodedata.category(c)[0] in "LZN" or c in _TAG_PUNCTUATION for c in text
    )


def _check_tags(tags):
    if tags is None:
        return
    if not isinstance(tags, list):
        raise _invalid("Tags must be a list.")
    if len(tags) > 50:
        raise _invalid(f"Too many tags: {len(tags)}; a resource can have at most 50 tags.")
    seen = set()
    for tag in tags:
        key = (tag or {}).get("key") or ""
        value = (tag or {}).get("value") or ""
        if not key:
            raise _invalid("Tag keys must not be empty.")
        if len(key) > 128:
            raise _invalid(f"Tag key is longer than 128 characters: {key[:40]}...")
        if len(value) > 256:
            raise _invalid(f"Tag value of {key} is longer than 256 characters.")
        if key.lower().startswith("aws:"):
            raise _invalid("Tag keys starting with 'aws:' are reserved for AWS use.")
        if not (_tag_text_ok(key) and _tag_text_ok(value)):
            raise _invalid(
                "Some tags contain invalid characters. Valid characters: UTF-8 letters, "
                "spaces, numbers and _ . / = + - : @."
            )
        if key in seen:
            raise _invalid(f"Duplicate tag key: {key}.")
        seen.add(key)


def _check_run_task(request):
    started_by = request.get("startedBy")
    if started_by is not None:
        if len(started_by) > 36:
            raise _invalid("startedBy longer than 36.")
        if not _STARTED_BY.fullmatch(started_by):
            raise _invalid(
                "startedBy may only contain letters, numbers, hyphens (-), forward slashes (/) "
                "and underscores (_)."
            )
    token = request.get("clientToken")
    if token is not None:
        if len(token) > 64:
            raise _invalid("clientToken longer than 64.")
        if any(not 33 <= ord(c) <= 126 for c in token):
            raise _invalid("clientToken may only contain ASCII characters 33-126.")
    count = request.get("count", 1)
    if not isinstance(count, int) or not 1 <= count <= 10:
        raise _invalid("count must be between 1 and 10.")
    _check_tags(request.get("tags"))
    overrides = request.get("overrides")
    if overrides is not None:
        size = len(json.dumps(overrides, separators=(",", ":"), ensure_ascii=False))
        if size > 8192:
            raise _invalid(
                f"Container overrides are {size} characters long; at most 8192 are allowed."
            )
        _check_size_overrides(overrides)


def _check_size_overrides(overrides):
    cpu, memory = overrides.get("cpu"), overrides.get("memory")
    if cpu is not None and memory is not None:
        units, mib = _units(cpu, "vcpu"), _units(memory, "gb")
        if units not in _FARGATE_SIZES or mib not in _FARGATE_SIZES[units]:
            raise ECSException(
                "ClientException",
                f"No Fargate configuration exists for given values: {cpu} CPU, {memory} "
                "memory. See the Amazon ECS documentation for the valid values.",
            )
    storage = (overrides.get("ephemeralStorage") or {}).get("sizeInGiB")
    if storage is not None and not (isinstance(storage, int) and 21 <= storage <= 200):
        raise _invalid(
            "The ephemeral storage size must be at least 21 GiB and at most 200 GiB."
        )


_tokens = {}
_run_task = _Response.run_task


def _no_capacity():
    return set(_control("no_capacity", str.split, ""))


def _placement(request):
    """The capacity provider a RunTask lands on: the first of its strategy with a base or a
    weight (a launch type FARGATE lands on FARGATE)."""
    strategy = request.get("capacityProviderStrategy") or []
    for item in strategy:
        if item.get("base") or item.get("weight", 0):
            return item.get("capacityProvider")
    return request.get("launchType") or (strategy[0].get("capacityProvider") if strategy else None)


def _apply_size_overrides(task, overrides):
    if overrides.get("cpu") is not None:
        task.cpu = str(_units(overrides["cpu"], "vcpu"))
    if overrides.get("memory") is not None:
        task.memory = str(_units(overrides["memory"], "gb"))
    if overrides.get("ephemeralStorage"):
        task.ephemeral_storage = overrides["ephemeralStorage"]


def _run(self):
    request = json.loads(self.body or "{}")
    _check_run_task(request)
    _check_task_definition_active(self, request)
    token = request.get("clientToken")
    cluster = str(request.get("cluster") or "default").split("/")[-1]
    key = (self.current_account, self.region, cluster, token)
    with _lock:
        replay = False
        if token and key in _tokens:
            first, arns = _tokens[key]
            tasks = [
                t
                for cluster_tasks in self.ecs_backend.tasks.values()
                for arn, t in cluster_tasks.items()
                if arn in arns
            ]
            if tasks:  # after /moto-api/reset the old tasks are gone: a new request
                if first != request:
                    conflict = ECSException(
                        "ConflictException",
                        "The clientToken is already in use with a different RunTask request.",
                    )
                    conflict.resourceIds = arns
                    raise conflict
                replay = True
        placed = _placement(request)
        if replay:
            result = ecs_responses.ActionResult({"tasks": tasks, "failures": []})
        elif placed in _no_capacity():
            result = ecs_responses.ActionResult(
                {
                    "tasks": [],
                    "failures": [
                        {
                            "arn": f"arn:aws:ecs:{self.region}:{self.current_account}:capacity-provider/{placed}",
                            "reason": "Capacity is unavailable at this time. Please try again "
                            "later or in a different availability zone",
                        }
                    ],
                }
            )
        else:
            count = request.get("count", 1)
            left = _capacity_tasks()
            started = count if left is None else min(count, left)
            if left is not None:
                _set_control("capacity_tasks", str(left - started))
            if started == 0:
                result = ecs_responses.ActionResult({"tasks": [], "failures": []})
            else:
                get_int = self._get_int_param
                self._get_int_param = (
                    lambda name, default=None: started if name == "count" else get_int(name, default)
                )
                try:
                    result = _run_task(self)
                finally:
                    del self._get_int_param
            for task in result.result["tasks"]:
                _apply_size_overrides(task, request.get("overrides") or {})
            # ECS answers one failure per task it could not place; the others started.
            result.result["failures"] = [
                {
                    "arn": f"arn:aws:ecs:{self.region}:{self.current_account}:capacity-provider/{placed}",
                    "reason": "Capacity is unavailable at this time. Please try again "
                    "later or in a different availability zone",
                }
                for _ in range(count - started)
            ]
        arns = [t.task_arn for t in result.result["tasks"]]
        if token and not replay:
            _tokens[key] = (request, arns)
        with open(os.path.join(_dir, "run_task.jsonl"), "a") as f:
            f.write(json.dumps({"request": request, "taskArns": arns, "replay": replay}) + "\n")
    return result


_Response.run_task = _run

# --- DescribeTasks: 100 tasks, MISSING failures, visibility lag ---------------------------


def _describe_tasks_response(self):
    cluster_str = self._get_param("cluster", "default")
    idents = self._get_param("tasks", []) or []
    include = self._get_param("include", []) or []
    if len(idents) > 100:
        raise _invalid("taskIds can have at most 100 items.")
    _, cluster_tasks = _cluster_tasks(self, cluster_str)
    if not idents:
        raise _invalid("Tasks cannot be empty.")
    oracle = _is_oracle(self)
    arns, failures = [], []
    with _lock:
        for ident in idents:
            task = _find_task(cluster_tasks, ident)
            if task is None or (not oracle and _lagged(task)):
                failures.append({"arn": ident, "reason": "MISSING"})
            elif task.task_arn not in arns:
                arns.append(task.task_arn)
        tasks = self.ecs_backend.describe_tasks(cluster_str, arns) if arns else []
    if "TAGS" in include:
        self._include_in_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    else:
        self._exclude_from_response(ecs_responses.DESCRIBE_TASKS_TAGS)
    return ecs_responses.ActionResult({"tasks": tasks, "failures": failures})


_Response.describe_tasks = _describe_tasks_response

# --- ListTasks: filter rules, default desiredStatus, pagination, visibility lag -----------

_LIST_FILTERS = ("family", "containerInstance", "serviceName", "desiredStatus", "launchType")


def _launch_type(task):
    if task.launch_type:
        return task.launch_type
    if task.capacity_provider_name in ("FARGATE", "FARGATE_SPOT"):
        return "FARGATE"
    return ""


def _family(task):
    return task.task_definition_arn.split("/")[-1].rsplit(":", 1)[0]


def _instance_matches(task, instance):
    arn = task.container_instance_arn or ""
    return bool(arn) and instance in (arn, arn.split("/")[-1])


def _page_token(offset):
    return base64.urlsafe_b64encode(json.dumps({"fgt-offset": offset}).encode()).decode()


def _page_offset(token):
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["fgt-offset"]
    except (ValueError, KeyError, TypeError):
        raise _invalid("Invalid nextToken.") from None
    if not isinstance(offset, int) or offset < 0:
        raise _invalid("Invalid nextToken.")
    return offset


def _list_tasks_response(self):
    request = json.loads(self.body or "{}")
    started_by = request.get("startedBy")
    others = [f for f in _LIST_FILTERS if request.get(f) is not None]
    if started_by is not None and others:
        raise _invalid("cannot specify startedBy with other arguments")
    max_results = request.get("maxResults")
    if max_results is not None and (not isinstance(max_results, int) or not 1 <= max_results <= 100):
        raise _invalid("maxResults must be between 1 and 100.")
    offset = _page_offset(request["nextToken"]) if request.get("nextToken") else 0
    _, cluster_tasks = _cluster_tasks(self, request.get("cluster") or "default")
    oracle = _is_oracle(self)
    desired = request.get("desiredStatus") or "RUNNING"
    family = request.get("family")
    instance = request.get("containerInstance")
    launch_type = request.get("launchType")
    with _lock:
        tasks = [
            t
            for t in list(cluster_tasks.values())
            if t.desired_status == desired
            and (oracle or not _lagged(t))
            and (started_by is None or t.started_by == started_by)
            and (family is None or _family(t) == family)
            and (instance is None or _instance_matches(t, instance))
            and (launch_type is None or _launch_type(t) == launch_type)
            # moto starts no service tasks: a serviceName filter matches none
            and request.get("serviceName") is None
        ]
    page = max_results or 100
    arns = [t.task_arn for t in tasks[offset : offset + page]]
    result = {"taskArns": arns}
    if offset + page < len(tasks):
        result["nextToken"] = _page_token(offset + page)
    return ecs_responses.ActionResult(result)


_Response.list_tasks = _list_tasks_response

# --- StopTask: unknown tasks, reason length, timestamps ----------------------------------

_stop_task = _Response.stop_task


def _stop_task_response(self):
    cluster_str = self._get_param("cluster", "default")
    ident = self._get_param("task")
    reason = self._get_param("reason")
    if reason is not None and len(reason) > 255:
        raise _invalid("Reason should be at most 255 characters long.")
    with _lock:
        _, cluster_tasks = _cluster_tasks(self, cluster_str)
        task = _find_task(cluster_tasks, ident)
        # A task ECS does not show yet may be unknown to StopTask too: the worst case of
        # eventual consistency, which a caller must survive by trying again.
        if task is None or (_lagged(task) and not _is_oracle(self)):
            raise _invalid("The referenced task was not found.")
        was_stopped = task.desired_status == "STOPPED"
        result = _stop_task(self)
        task._fgt_stopped_by_api = True
        if not was_stopped:
            now = utcnow()
            task.stopping_at = getattr(task, "stopping_at", None) or now
            task.stopped_at = getattr(task, "stopped_at", None) or now
            task.execution_stopped_at = task.stopped_at
            task.stop_code = getattr(task, "stop_code", None) or "UserInitiated"
    return result


_Response.stop_task = _stop_task_response

# --- RegisterTaskDefinition: Fargate CPU/memory combinations ------------------------------

_FARGATE_SIZES = {
    256: [512, 1024, 2048],
    512: list(range(1024, 4096 + 1, 1024)),
    1024: list(range(2048, 8192 + 1, 1024)),
    2048: list(range(4096, 16384 + 1, 1024)),
    4096: list(range(8192, 30720 + 1, 1024)),
    8192: list(range(16384, 61440 + 1, 4096)),
    16384: list(range(32768, 122880 + 1, 8192)),
}


def _units(value, unit):
    """CPU units or MiB from '1024', '1 vCPU' or '2 GB' (None when not one of those)."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(vcpu|gb)?", text, re.IGNORECASE)
    if not match:
        return None
    number = float(match.group(1))
    if match.group(2) and match.group(2).lower() == unit:
        number *= 1024
    return int(number)


_register_task_definition = _Response.register_task_definition


def _register(self):
    compat = self._get_param("requiresCompatibilities") or []
    cpu, memory = self._get_param("cpu"), self._get_param("memory")
    if "FARGATE" in compat and cpu is not None and memory is not None:
        units, mib = _units(cpu, "vcpu"), _units(memory, "gb")
        if units not in _FARGATE_SIZES:
            raise ECSException("ClientException", "Invalid 'cpu' setting for task.")
        if mib is None or mib not in _FARGATE_SIZES[units]:
            raise ECSException(
                "ClientException",
                f"No Fargate configuration exists for given values: {cpu} CPU, {memory} "
                "memory. See the Amazon ECS documentation for the valid values.",
            )
    return _register_task_definition(self)


_Response.register_task_definition = _register

# --- Task definitions of job images: container rules, concurrent revisions, ACTIVE only ----

_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_registering = set()


def _client_error(message):
    return ECSException("ClientException", message)


def _check_task_definition(request):
    family = request.get("family") or ""
    if not _NAME.fullmatch(family):
        raise _client_error(
            "Family name can be up to 255 letters (uppercase and lowercase), numbers, "
            "hyphens, and underscores."
        )
    containers = request.get("containerDefinitions") or []
    if not 1 <= len(containers) <= 10:
        raise _client_error(
            f"Too many containers: {len(containers)}; a task definition has 1 to 10."
        )
    volumes = {(v or {}).get("name") for v in request.get("volumes") or []}
    essential = {}
    for c in containers:
        name = (c or {}).get("name") or ""
        if not _NAME.fullmatch(name):
            raise _client_error(
                "Container name can be up to 255 letters (uppercase and lowercase), "
                "numbers, hyphens, and underscores."
            )
        if name in essential:
            raise _client_error(f"Duplicate container name: {name}.")
        essential[name] = c.get("essential", True) is not False
    if not any(essential.values()):
        raise _client_error("A task definition must have at least one essential container.")
    awsvpc = request.get("networkMode") == "awsvpc"
    for c in containers:
        for dep in c.get("dependsOn") or []:
            target, condition = dep.get("containerName"), dep.get("condition")
            if target not in essential:
                raise _client_error(f"Container {c['name']} depends on unknown container {target}.")
            if condition in ("COMPLETE", "SUCCESS") and essential[target]:
                raise _client_error(
                    f"Dependency condition {condition} can't be set on an essential container "
                    f"({target})."
                )
        for mount in c.get("mountPoints") or []:
            if mount.get("sourceVolume") not in volumes:
                raise _client_error(
                    f"Invalid 'mountPoints' setting for container {c['name']}: unknown volume "
                    f"{mount.get('sourceVolume')}."
                )
        secrets = c.get("secrets") or []
        for secret in secrets:
            if not secret.get("name") or not secret.get("valueFrom"):
                raise _client_error(
                    f"Container {c['name']}: a secret needs a name and a valueFrom."
                )
        if secrets and not request.get("executionRoleArn"):
            raise _client_error(
                "When you are specifying container secrets, you must also specify a value "
                "for 'executionRoleArn'."
            )
        for port in c.get("portMappings") or []:
            host = port.get("hostPort")
            if awsvpc and host is not None and host != port.get("containerPort"):
                raise _client_error(
                    "When networkMode=awsvpc, the host ports and container ports in port "
                    "mappings must match."
                )


def _register_checked(self):
    request = json.loads(self.body or "{}")
    _check_task_definition(request)
    _check_tags(request.get("tags"))
    family = request.get("family")
    with _lock:
        if family in _registering:
            raise _client_error(
                "Too many concurrent attempts to create a new revision of the specified family."
            )
        _registering.add(family)
    try:
        hold = max(0.0, _control("register_hold", float, 0.0))
        if hold:
            time.sleep(hold)
        return _register(self)
    finally:
        with _lock:
            _registering.discard(family)


_Response.register_task_definition = _register_checked

_describe_task_definition = ecs_models.EC2ContainerServiceBackend.describe_task_definition


def _describe_task_definition_active(self, task_definition_str):
    """A family without revision names its latest ACTIVE revision, as in ECS."""
    name = task_definition_str.split("/")[-1]
    if ":" in name:
        return _describe_task_definition(self, task_definition_str)
    active = [
        rev
        for rev, td in self.task_definitions.get(name, {}).items()
        if td.status == "ACTIVE"
    ]
    if not active:
        raise ecs_models.TaskDefinitionNotFoundException()
    return self.task_definitions[name][max(active)]


ecs_models.EC2ContainerServiceBackend.describe_task_definition = _describe_task_definition_active


_resources = ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements


class _SizedDefinition:
    """A task definition whose containers without memory of their own count 0 MiB."""

    def __init__(self, task_definition):
        self.container_definitions = [
            cd
            if any(k in cd for k in ("memory", "Memory", "memoryReservation", "MemoryReservation"))
            else dict(cd, memory=0)
            for cd in task_definition.container_definitions
        ]


def _resources_fargate(task_definition):
    """Fargate containers need no memory of their own (the task's is enough); moto would add
    None and fail RunTask with a 500."""
    return _resources(_SizedDefinition(task_definition))


ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(
    _resources_fargate
)


def _check_task_definition_active(response, request):
    td = response.ecs_backend.describe_task_definition(str(request.get("taskDefinition") or ""))
    if td.status != "ACTIVE":
        raise _client_error("TaskDefinition is inactive")


# --- TagResource / UntagResource: tag rules, 50 per resource, unknown resources -------------


def _tagged_resource(response, arn):
    backend = response.ecs_backend
    try:
        return backend._get_resource(arn, backend._parse_resource_arn(arn))
    except Exception:  # noqa: BLE001 - moto raises NotImplementedError, KeyError...
        raise ECSException(
            "ResourceNotFoundException", "The specified resource wasn't found."
        ) from None


def _counted(tags):
    return [t for t in tags or [] if not str(t.get("key", "")).lower().startswith("aws:")]


def _tag_resource_response(self):
    request = json.loads(self.body or "{}")
    arn = request.get("resourceArn") or ""
    tags = request.get("tags")
    if not tags:
        raise _invalid("Tags must not be empty.")
    _check_tags(tags)
    with _lock:
        resource = _tagged_resource(self, arn)
        new_keys = {t["key"] for t in tags}
        kept = [t for t in _counted(resource.tags) if t["key"] not in new_keys]
        total = len(kept) + len(_counted(tags))
        if total > 50:
            raise _invalid(
                f"Too many tags: the resource would have {total}; a resource can have at "
                "most 50 tags."
            )
        return _tag_resource(self)


def _untag_resource_response(self):
    request = json.loads(self.body or "{}")
    if not request.get("tagKeys"):
        raise _invalid("TagKeys must not be empty.")
    with _lock:
        _tagged_resource(self, request.get("resourceArn") or "")
        return _untag_resource(self)


_tag_resource = _Response.tag_resource
_untag_resource = _Response.untag_resource
_Response.tag_resource = _tag_resource_response
_Response.untag_resource = _untag_resource_response


# 14. Throttling.
_buckets = {}


def _throttle_config():
    return _control("throttle", json.loads, {})


def _refilled(name, rate, burst, now):
    """The tokens of bucket `name` at `now` (refilled at `rate`, at most `burst`)."""
    tokens, at = _buckets.get(name, (float(burst), now))
    return min(float(burst), tokens + (now - at) * float(rate))


def _throttled(self, action, tasks=0):
    """Raises ThrottlingException when `action` (starting `tasks` Fargate tasks) is over a bucket."""
    config = _throttle_config()
    if not config or _is_oracle(self):
        return
    wanted = []
    if action in config:
        wanted.append((action, 1))
    if tasks and "FargateTasks" in config:
        wanted.append(("FargateTasks", tasks))
    with _lock:
        now = time.monotonic()
        tokens = {name: _refilled(name, *config[name], now) for name, _ in wanted}
        short = [name for name, n in wanted if tokens[name] < n]
        # All or nothing: a refused call takes no token of any bucket.
        for name, n in wanted:
            _buckets[name] = (tokens[name] - (0 if short else n), now)
        if short:
            with open(os.path.join(_dir, "throttled.jsonl"), "a") as f:
                f.write(json.dumps({"action": action, "bucket": short[0], "at": time.time()}) + "\n")
            raise ECSException("ThrottlingException", "Rate exceeded")


def _throttling(action, handler, count_tasks=False):
    def wrapped(self):
        tasks = 0
        if count_tasks:
            try:
                tasks = int(json.loads(self.body or "{}").get("count") or 1)
            except (ValueError, AttributeError):
                tasks = 1
        _throttled(self, action, tasks)
        return handler(self)

    return wrapped


_Response.run_task = _throttling("RunTask", _Response.run_task, count_tasks=True)
_Response.stop_task = _throttling("StopTask", _Response.stop_task)
_Response.tag_resource = _throttling("TagResource", _Response.tag_resource)
_Response.untag_resource = _throttling("UntagResource", _Response.untag_resource)
_Response.describe_tasks = _throttling("DescribeTasks", _Response.describe_tasks)
_Response.list_tasks = _throttling("ListTasks", _Response.list_tasks)


import moto.dynamodb.models as dynamodb_models  # noqa: E402


def _atomic(method):
    def wrapped(*args, **kwargs):
        with _lock:
            return method(*args, **kwargs)

    return wrapped


for _name in (
    "put_item",
    "get_item",
    "update_item",
    "delete_item",
    "query",
    "scan",
    "transact_write_items",
    "batch_write_item",
):
    _backend = dynamodb_models.DynamoDBBackend
    setattr(_backend, _name, _atomic(getattr(_backend, _name)))


from moto.server import main  # noqa: E402

sys.exit(main())
