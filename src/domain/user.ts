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
}
