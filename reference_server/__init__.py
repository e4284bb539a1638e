"""The Anypost SMTP submission reference server, built on aiosmtpd.

It implements the whole contract of ``anypost-smtp-submission.txt`` so that the conformance
harness can check itself and vendors can see what conforming looks like.
"""

__all__: list[str] = []
