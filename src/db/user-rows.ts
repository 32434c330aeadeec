import { ROLES, type Role, type User } from '../domain/user.ts';
import type { UserRow } from './schema.ts';

// The columns of a user that the domain reads, and their mapping: shared by the repositories that return a user with
// other rows (sessions, email flows), so that none of them imports another repository for it.
export const userColumns = [
  'id',
  'username',
  'email',
  'age',
  'level',
  'created_at_ms',
  'roles',
  'disabled_at_ms',
  'email_verified_at_ms',
  'pending_email',
] as const;

export function toUser(row: Pick<UserRow, (typeof userColumns)[number]>): User {
  return {
    id: Number(row.id),
    username: row.username,
    email: row.email,
    age: Number(row.age),
    level: row.level,
    createdAt: new Date(Number(row.created_at_ms)),
    roles: parseRoles(row.roles),
    disabledAt: row.disabled_at_ms === null ? null : new Date(Number(row.disabled_at_ms)),
    emailVerifiedAt: row.email_verified_at_ms === null ? null : new Date(Number(row.email_verified_at_ms)),
    pendingEmail: row.pending_email,
  };
}

// Names this version does not know (a newer version's, or hand-edited) grant nothing.
function parseRoles(column: string): Role[] {
  return column.split(' ').filter((name): name is Role => (ROLES as readonly string[]).includes(name));
}
