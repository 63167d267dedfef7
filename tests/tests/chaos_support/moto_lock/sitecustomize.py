# Loaded by the moto server that the chaos test starts (through PYTHONPATH): serialises every
# DynamoDB request behind one lock.
#
# Why: moto's TransactWriteItems snapshots each table it touches (a deep copy) before it starts
# and, when any of its conditions fails, puts the snapshot back. Its server is threaded, so
# every write another request made in between is silently undone: a job that was answered 201
# disappears, an account update or a ledger entry is lost. Real DynamoDB isolates
# transactions; with this lock moto does too. The product does many conditional transactions
# that fail on purpose (optimistic concurrency), so the chaos test needs it.
import threading

try:
    from moto.dynamodb.responses import DynamoHandler

    _lock = threading.RLock()
    _call_action = DynamoHandler.call_action

    def _serialised_call_action(self, *args, **kwargs):
        with _lock:
            return _call_action(self, *args, **kwargs)

    DynamoHandler.call_action = _serialised_call_action
except Exception as e:  # never keep moto from starting
    import sys

    print(f"chaos moto lock not installed: {e!r}", file=sys.stderr)
