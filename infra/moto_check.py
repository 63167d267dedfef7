"""Checks infra/moto_server.py's patches against moto itself: the same requests go to a patched
and an unpatched server, and every answer must be the same.

Covers `fast_index_queries` (random tables, index key conditions of every kind, both scan
directions, with and without `Limit`, every page) and a table query. Run by `make test`
(infra/test.sh); exits non-zero on the first difference, printing both answers.

Usage: python infra/moto_check.py
"""

import os
import random
import socket
import subprocess
import sys
import time

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port, patched):
    disable = "" if patched else "m.fast_index_queries = lambda: None; "
    code = (
        f"import sys; sys.argv = ['moto_server', '-p', '{port}']; sys.path.insert(0, {HERE!r}); "
        f"import moto_server as m; {disable}m.main()"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(port):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"moto on port {port} did not start")


def all_pages(client, request):
    request, pages = dict(request), []
    while len(pages) < 500:
        page = client.query(**request)
        page.pop("ResponseMetadata")
        pages.append(page)
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return pages


def main():
    seed = int(os.environ.get("MOTO_CHECK_SEED", random.randrange(1 << 32)))
    rnd = random.Random(seed)
    ports = [free_port(), free_port()]
    procs = [start(ports[0], True), start(ports[1], False)]
    try:
        for port in ports:
            wait_ready(port)
        clients = [
            boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                         aws_access_key_id="test", aws_secret_access_key="test")
            for port in ports
        ]
        for client in clients:
            client.create_table(
                TableName="t",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "g", "r")],
                GlobalSecondaryIndexes=[{
                    "IndexName": "gsi",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }],
                BillingMode="PAY_PER_REQUEST",
            )
        for n in range(600):
            item = {"pk": {"S": f"p{n % 50}"}, "sk": {"S": f"s{n}"}, "x": {"S": "y" * rnd.randint(0, 1500)}}
            if rnd.random() < 0.9:  # some items are not in the index at all
                item["g"] = {"S": rnd.choice(["A", "B"])}
            if rnd.random() < 0.9:
                item["r"] = {"S": "%05d" % rnd.randint(0, 999)}  # equal index keys happen
            for client in clients:
                client.put_item(TableName="t", Item=item)
        pages_checked = 0
        for _ in range(80):
            value = "%05d" % rnd.randint(0, 999)
            condition = rnd.choice(["<=", "<", ">", ">=", "=", "BETWEEN", "begins_with", None])
            values = {":g": {"S": rnd.choice(["A", "B", "C"])}}
            if condition is None:
                expression = "g = :g"
            elif condition == "BETWEEN":
                expression = "g = :g AND r BETWEEN :a AND :b"
                values.update({":a": {"S": min(value, "00500")}, ":b": {"S": max(value, "00500")}})
            elif condition == "begins_with":
                expression, values[":a"] = "g = :g AND begins_with(r, :a)", {"S": value[:3]}
            else:
                expression, values[":a"] = f"g = :g AND r {condition} :a", {"S": value}
            request = {"TableName": "t", "IndexName": "gsi", "KeyConditionExpression": expression,
                       "ExpressionAttributeValues": values, "ScanIndexForward": rnd.random() < 0.5}
            if rnd.random() < 0.3:
                request["Limit"] = rnd.randint(1, 40)
            patched, unpatched = (all_pages(client, request) for client in clients)
            if patched != unpatched:
                print(f"moto_check: seed {seed}: {request}\npatched:   {patched}\nunpatched: {unpatched}")
                return 1
            pages_checked += len(patched)
        request = {"TableName": "t", "KeyConditionExpression": "pk = :p",
                   "ExpressionAttributeValues": {":p": {"S": "p3"}}}
        if all_pages(clients[0], request) != all_pages(clients[1], request):
            print(f"moto_check: seed {seed}: table query differs")
            return 1
        print(f"moto_check: seed {seed}: 80 index queries ({pages_checked} pages) and a table query: "
              "patched moto answered exactly as moto")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
