"""Dramatiq on RabbitMQ: the broker, its middleware, and actors of a few lines each.

Actors take ids and await one service call; everything they do lives in ``service/``.
"""
