"""Real SMTP servers this project did not write, started as targets for the catalogue.

``interop.postfix``: Debian's Postfix with Dovecot SASL, configured as an Anypost look-alike.
``interop.plain``: plain aiosmtpd with no TLS and no authentication, a server that conforms to
nothing. Both write a target profile for the run and stop everything they started.
"""
