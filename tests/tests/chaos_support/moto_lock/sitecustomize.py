# Loaded by the moto server that the chaos test starts (through PYTHONPATH, see
# `install_moto_lock` in chaos.rs). Two changes to moto's DynamoDB, neither of them to what
# DynamoDB answers:
#
# 1. Every DynamoDB request runs under one lock. moto's TransactWriteItems deep-copies each
#    table it touches before it starts and, when any of its conditions fails, puts that copy
#    back. The server is threaded, so every write another request made in between is silently
#    undone: a job answered 201 disappears, an account update or a ledger entry is lost. Real
#    DynamoDB isolates transactions; under the lock moto does too. (The harness now starts
#    moto through infra/moto_server.py, which serialises DynamoDB requests the same way; this
#    lock nests inside that one and keeps the test right with a plain `moto_server` too.)
#
# 2. A transaction's conditions are checked first, before anything is written; one that
#    fails is refused as moto would refuse it (the same cancellation reasons), with nothing to
#    roll back. One whose conditions all hold runs moto's own code without the table copy,
#    which under the lock can only be needed for malformed requests. The copy costs time and
#    memory in proportion to the whole table, for every transaction: with 500 jobs it made
#    moto the bottleneck of the test (and grow to gigabytes).
import sys
import threading

try:
    import copy as _copy

    import moto.dynamodb.models as _models
    from moto.dynamodb.exceptions import TransactionCanceledException
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    _lock = threading.RLock()
    _call_action = DynamoHandler.call_action

    def _serialised_call_action(self, *args, **kwargs):
        with _lock:
            return _call_action(self, *args, **kwargs)

    DynamoHandler.call_action = _serialised_call_action

    class _CopyWithoutTables:
        """`copy` for moto's DynamoDB models: a table is not copied while `skip` is set."""

        skip = False

        def __getattr__(self, name):
            return getattr(_copy, name)

        def deepcopy(self, obj, *args, **kwargs):
            if self.skip and isinstance(obj, Table):
                return obj
            return _copy.deepcopy(obj, *args, **kwargs)

    _copy_proxy = _CopyWithoutTables()
    _models.copy = _copy_proxy
    _transact = _models.DynamoDBBackend.transact_write_items

    def _failed_conditions(backend, transact_items):
        """moto's cancellation reasons if a condition fails, else None. Reads only."""
        reasons = []
        failed = False
        seen = set()
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            table = backend.get_table(op["TableName"])
            if op_type == "Put":
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            unique = (op["TableName"], str(sorted(key.items())))
            if unique in seen:
                raise ValueError("two operations on one item: moto's own path refuses it")
            seen.add(unique)
            condition = op.get("ConditionExpression")
            current = backend.get_item(op["TableName"], key)
            if condition is not None and not _models.get_filter_expression(
                condition,
                op.get("ExpressionAttributeNames"),
                op.get("ExpressionAttributeValues"),
            ).expr(current):
                item = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    item = current.to_json()["Attributes"]
                reasons.append(("ConditionalCheckFailed", "The conditional request failed", item))
                failed = True
            else:
                reasons.append((None, None, None))
        return reasons if failed else None

    def _checked_transact(self, transact_items):
        with _lock:
            try:
                reasons = _failed_conditions(self, transact_items)
            except Exception:
                # Anything unusual (too many items, unknown table, ...): moto's own path.
                return _transact(self, transact_items)
            if reasons is not None:
                raise TransactionCanceledException(reasons)
            _copy_proxy.skip = True
            try:
                return _transact(self, transact_items)
            finally:
                _copy_proxy.skip = False

    _models.DynamoDBBackend.transact_write_items = _checked_transact
except Exception as e:  # never keep moto from starting
    print(f"chaos moto lock not installed: {e!r}", file=sys.stderr)
