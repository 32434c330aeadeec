/** Returns the name of the unique index or column a driver error reports as violated, if that is what it is. */
export function violatedUniqueConstraint(error: unknown): string | undefined {
  if (!error || typeof error !== 'object') return undefined;
  const { code, constraint, errcode, message } = error as {
    code?: unknown;
    constraint?: unknown;
    errcode?: unknown;
    message?: unknown;
  };
  // PostgreSQL unique_violation.
  if (code === '23505' && typeof constraint === 'string') return constraint;
  // SQLITE_CONSTRAINT_UNIQUE (2067) and SQLITE_CONSTRAINT_PRIMARYKEY (1555): "UNIQUE constraint failed: t.col".
  if ((errcode === 2067 || errcode === 1555) && typeof message === 'string') {
    return message.split(':').pop()?.trim();
  }
  return undefined;
}
