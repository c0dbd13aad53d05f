import type { ReactNode } from 'react';

interface CardProps {
  title?: ReactNode;
  description?: ReactNode;
  actions?: ReactNode;
  children: ReactNode;
  className?: string;
  /** Heading level of the title (defaults to h2). */
  level?: 2 | 3;
}

export function Card({ title, description, actions, children, className, level = 2 }: CardProps) {
  const Heading = level === 2 ? 'h2' : 'h3';
  return (
    <section className={`card ${className ?? ''}`.trim()}>
      {(title || actions) && (
        <div className="card-header">
          <div>
            {title && <Heading className="card-title">{title}</Heading>}
            {description && <p className="card-description">{description}</p>}
          </div>
          {actions && <div className="card-actions">{actions}</div>}
        </div>
      )}
      {children}
    </section>
  );
}

export function StatTile({ label, value, hint }: { label: string; value: ReactNode; hint?: ReactNode }) {
  return (
    <div className="stat" role="group" aria-label={label}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">{value}</div>
      {hint && <div className="stat-hint">{hint}</div>}
    </div>
  );
}
