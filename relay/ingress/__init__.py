"""SMTP ingress: listeners, sessions, AUTH; hands accepted mail to intake or inbound."""
