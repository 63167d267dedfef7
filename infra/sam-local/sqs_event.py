"""The jobs queue, seen as the worker's SQS event source sees it (for smoke-test.sh).

    python3 sqs_event.py receive QUEUE_URL JOB_ID OUT [--look-now]
        Receives, within 30 s, the message for JOB_ID whose `look_now` is as asked, writes it to
        OUT as the SQS event Lambda would hand the worker, and prints its receipt handle. Other
        messages received on the way stay invisible for the queue's visibility timeout.
    python3 sqs_event.py delete QUEUE_URL RECEIPT_HANDLE
        Deletes a handled message, as the event source mapping does after a success.

The endpoint is the queue URL's scheme and host (moto); credentials and region come from the
environment.
"""

import argparse
import json
import sys
import time

import boto3


def client(queue_url):
    return boto3.client("sqs", endpoint_url="/".join(queue_url.split("/")[:3]))


def receive(args):
    sqs = client(args.queue_url)
    arn = sqs.get_queue_attributes(QueueUrl=args.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = sqs.receive_message(
            QueueUrl=args.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=2,
            AttributeNames=["All"],
        )
        for m in got.get("Messages", []):
            body = json.loads(m["Body"])
            if body.get("job_id") != args.job_id or body.get("look_now", False) != args.look_now:
                continue
            # The record as Lambda's SQS event source writes it (aws_lambda_events::sqs::SqsMessage).
            record = {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": arn.split(":")[3],
            }
            with open(args.out, "w") as f:
                json.dump({"Records": [record]}, f, indent=2)
            print(m["ReceiptHandle"])
            return 0
    print(
        f"no message for job {args.job_id} (look_now={args.look_now}) on {args.queue_url} within 30 s",
        file=sys.stderr,
    )
    return 1


def delete(args):
    client(args.queue_url).delete_message(QueueUrl=args.queue_url, ReceiptHandle=args.receipt)
    return 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    r = sub.add_parser("receive")
    r.add_argument("queue_url")
    r.add_argument("job_id")
    r.add_argument("out")
    r.add_argument("--look-now", action="store_true")
    r.set_defaults(run=receive)
    d = sub.add_parser("delete")
    d.add_argument("queue_url")
    d.add_argument("receipt")
    d.set_defaults(run=delete)
    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
