export const LEVELS = ['beginner', 'intermediate', 'advanced'] as const;

export type Level = (typeof LEVELS)[number];

export const ROLES = ['admin'] as const;

export type Role = (typeof ROLES)[number];

/** A user as the rules see them: never with a password hash (only credential lookups carry one, beside it). */
export interface User {
  id: number;
  username: string;
  email: string;
  age: number;
  level: Level;
  createdAt: Date;
  /** Granted by an operator; `admin` may ask /token for the `admin` scope. */
  roles: Role[];
  /** Since when the account is disabled, or null while it may log in. */
  disabledAt: Date | null;
  /** When a link mailed to `email` was used; null until then. */
  emailVerifiedAt: Date | null;
  /** The address the user asked to change to, until a link mailed to it is used. */
  pendingEmail: string | null;
}
