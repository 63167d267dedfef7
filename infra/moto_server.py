"""moto's server, with DynamoDB requests handled one at a time.

moto's `transact_write_items` snapshots the table and restores the snapshot when a transaction
fails; with moto's threaded server, a concurrent request's committed write can be undone by
that restore. Real DynamoDB never does this. Serialising DynamoDB requests (connections stay
concurrent; SQS long polls and other services are not held up) makes moto a faithful peer for
tests that run many requests at once.

It also makes that snapshot cheap: moto deep-copies the *whole table* once per item of every
transaction, so a transaction's cost grows with the table (a 500-job chaos run: ~5 s per request
once the table held a few thousand items, a worker backlog of ~1,000 messages). A transaction
can only change the items it names, so the snapshot here shares every other item with the live
table and deep-copies only the named ones — the rollback restores exactly what moto's would.

Index queries are made cheap too (`fast_index_queries`): moto answers a query on a global
secondary index by sorting every item of the table, then computing the size of every item under
the partition key, even those the range condition rejects — ~3.3 s for the reconciler's due query
at 10,000 active jobs. Pre-filtering by the key condition gives the same items.

Usage: python infra/moto_server.py [-H HOST] [-p PORT]
"""

import argparse
import os
import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


class Serialised:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            # Materialise the body inside the lock: the work happens while iterating.
            return list(self.app(environ, start_response))


def cheap_transaction_snapshots():
    """Replaces the `copy` module seen by moto's DynamoDB backend with one whose `deepcopy` of a
    table copies only the items the running transaction names (see the module docstring).
    DynamoDB requests are serialised above, so one transaction runs at a time."""
    import copy as real_copy
    import types
    from collections import defaultdict

    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    current = {"touched": None}

    def deepcopy(obj, memo=None):
        touched = current["touched"]
        if touched is None or not isinstance(obj, Table):
            return real_copy.deepcopy(obj, memo)
        clone = real_copy.copy(obj)
        clone.items = defaultdict(dict)
        for hash_value, entry in obj.items.items():
            clone.items[hash_value] = dict(entry) if isinstance(entry, dict) else entry
        for hash_value, range_value in touched.get(obj.name, ()):
            entry = obj.items.get(hash_value)
            if entry is None:
                continue
            if isinstance(entry, dict):
                if range_value in entry:
                    clone.items[hash_value][range_value] = real_copy.deepcopy(entry[range_value])
            else:
                clone.items[hash_value] = real_copy.deepcopy(entry)
        return clone

    shim = types.SimpleNamespace(**{name: getattr(real_copy, name) for name in dir(real_copy) if not name.startswith("__")})
    shim.deepcopy = deepcopy
    models.copy = shim
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        touched = {}
        for entry in transact_items:
            for op in entry.values():
                table = self.tables.get(op.get("TableName"))
                if table is None:
                    continue
                attrs = op.get("Key") or op.get("Item") or {}
                hash_attr = attrs.get(table.hash_key_attr)
                range_attr = attrs.get(table.range_key_attr) if table.range_key_attr else None
                touched.setdefault(table.name, set()).add(
                    (
                        DynamoType(hash_attr) if hash_attr is not None else None,
                        DynamoType(range_attr) if range_attr is not None else None,
                    )
                )
        current["touched"] = touched
        try:
            return original(self, transact_items)
        finally:
            current["touched"] = None

    models.DynamoDBBackend.transact_write_items = transact_write_items


def fast_index_queries():
    """Hands moto's `Table.query` on an index only the items its key condition selects.

    moto walks `all_items()` (the whole table, sorted), keeps the items under the index's
    partition key, sorts those, and then, item by item, computes each one's size before testing
    the range condition. An item the key condition rejects is never returned or counted, and
    `LastEvaluatedKey` is the last *returned* item, so removing those items first returns the
    same items. Only queries without `Limit` take this path (the reconciler's due and full
    reads): with a `Limit`, moto adds a `LastEvaluatedKey` when any item of the partition
    follows a full page, and that stays moto's. One difference remains, towards DynamoDB: moto
    counts rejected items' sizes against the 1 MB page limit, DynamoDB (and this) only the
    items the key condition reads. Anything else (a table query, several range keys, the legacy
    `KeyConditions` filters) goes to moto untouched. Checked against unpatched moto on random
    tables and conditions (`infra/moto_check.py`)."""
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    original = Table.query

    def query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
              scan_index_forward, projection_expressions, index_name=None, consistent_read=False,
              filter_expression=None, hash_key_conditions=None, range_key_conditions=None,
              **filter_kwargs):
        def untouched():
            return original(self, hash_key, range_comparison, range_objs, limit,
                            exclusive_start_key, scan_index_forward, projection_expressions,
                            index_name, consistent_read, filter_expression,
                            hash_key_conditions=hash_key_conditions,
                            range_key_conditions=range_key_conditions, **filter_kwargs)

        index = next((i for i in self.all_indexes() if i.name == index_name), None) if index_name else None
        if (index is None or limit is not None or not hash_key_conditions or filter_kwargs
                or len(range_key_conditions or []) > 1):
            return untouched()
        range_keys = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
        if range_comparison and len(range_keys) != 1:
            return untouched()

        def selected(item):
            if not isinstance(item, Item):
                return False
            for attr, value in hash_key_conditions:
                found = item.attrs.get(attr)
                if not found or found != value:
                    return False
            if range_comparison:
                found = item.attrs.get(range_keys[0])
                return bool(found) and found.compare(range_comparison, range_objs)
            return True

        def every_item():
            for entry in self.items.values():
                if self.range_key_attr:
                    yield from entry.values()
                else:
                    yield entry

        # Unsorted: moto sorts the candidates by the index key and then the table key, a total
        # order, so their order here does not matter.
        candidates = [item for item in every_item() if selected(item)]
        # An instance attribute shadows the method for this one call; DynamoDB requests are
        # serialised (`Serialised`), so no other request sees it.
        self.all_items = lambda: candidates
        try:
            return untouched()
        finally:
            del self.all_items

    Table.query = query


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    cheap_transaction_snapshots()
    fast_index_queries()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Serialised(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
