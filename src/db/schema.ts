import type { Generated, Insertable, Kysely, Selectable } from 'kysely';

export type Level = 'beginner' | 'intermediate' | 'advanced';

export interface UsersTable {
  id: Generated<number>;
  username: string;
  // NFKC + case fold: the unique index on it makes `Alice` and `alice` one account.
  username_canonical: string;
  email: string;
  email_canonical: string;
  password_hash: string;
  age: number;
  level: Level;
  created_at_ms: number;
  updated_at_ms: number;
}

export interface ConversationsTable {
  id: Generated<number>;
  user_id: number;
  created_at_ms: number;
}

export interface MessagesTable {
  id: Generated<number>;
  conversation_id: number;
  author: 'system' | 'user';
  body: string;
  created_at_ms: number;
}

export interface SigningKeysTable {
  kid: string;
  algorithm: string;
  public_jwk: string;
  private_jwk: string;
  created_at_ms: number;
  retired_at_ms: number | null;
}

export interface Database {
  users: UsersTable;
  conversations: ConversationsTable;
  messages: MessagesTable;
  signing_keys: SigningKeysTable;
}

export type Db = Kysely<Database>;
export type UserRow = Selectable<UsersTable>;
export type NewUserRow = Insertable<UsersTable>;
export type SigningKeyRow = Selectable<SigningKeysTable>;
export type Dialect = 'sqlite' | 'postgres';
