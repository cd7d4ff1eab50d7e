"""Alembic's environment for the centre's store, run programmatically only.

``hubd.centre.store`` opens the connection and hands it over in ``config.attributes``;
there is no alembic.ini and no ``alembic`` command line to keep in step.
"""

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite alters a table by copying it; Alembic does that in batch mode.
context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
