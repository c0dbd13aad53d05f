"""A real SMTP server for the admin API's tests (aiosmtpd), on 127.0.0.1 and a free port.

Prints `PORT <n>` once listening, then one JSON line per message received:
{"from": ..., "to": [...], "data": "<the whole message>"}. Runs until stdin closes.
"""
import asyncio
import json
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        line = json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos, "data": data})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return "250 OK"


async def main():
    loop = asyncio.get_running_loop()
    handler = Sink()
    server = await loop.create_server(lambda: SMTP(handler, hostname="localhost"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    # Ends when the test harness closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
