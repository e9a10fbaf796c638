import { Inject, Injectable, Logger, type OnModuleInit, type Type } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { INBOX_HANDLER_METADATA, INBOX_LISTENER_METADATA, INBOX_RESOLVED_OPTIONS } from '../inbox.constants';
import { InboxListeners } from './inbox-listeners';
import type { InboxEventType } from '../interfaces/inbox-event.interface';
import { loadPayloadValidation } from './payload-materializer';
import { InboxConfigurationError } from '../errors/inbox.error';
import { resolveBackoff, resolveHandlerTimeout, resolvePayloadValidation } from '../inbox-options';
import type { InboxCommandHandler, InboxHandlerMetadata } from '../interfaces/inbox-handler.interface';
import type { BackoffOptions, PayloadValidationOptions, ResolvedInboxOptions } from '../interfaces/inbox-options.interface';
import type { DeadLetterPolicy } from '../state/ordering';

/** A discovered handler with its settings merged over the module's. */
export interface RegisteredInboxHandler {
  readonly commandType: string;
  readonly className: string;
  readonly instance: InboxCommandHandler<unknown>;
  readonly payloadClass?: Type<object>;
  readonly maxAttempts: number;
  readonly backoff: BackoffOptions;
  readonly timeoutMs: number;
  readonly payloadValidation: Required<PayloadValidationOptions>;
  /** Derives the ordering key from a payload as received, if the handler says how. */
  readonly orderingKey?: (payload: Record<string, unknown>) => unknown;
  readonly onDeadLetter: DeadLetterPolicy;
}

/** Finds `@InboxHandler` providers and `@OnInbox…` listeners at boot, and fails fast on mistakes. */
@Injectable()
export class InboxExplorer implements OnModuleInit {
  private readonly logger = new Logger(InboxExplorer.name);
  private readonly handlers = new Map<string, RegisteredInboxHandler>();

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly listeners: InboxListeners,
    @Inject(INBOX_RESOLVED_OPTIONS) private readonly options: ResolvedInboxOptions,
  ) {}

  onModuleInit(): void {
    this.explore();
    this.exploreListeners();
  }

  private exploreListeners(): void {
    for (const wrapper of this.discovery.getProviders()) {
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      if (!instance || typeof instance !== 'object' || !wrapper.isDependencyTreeStatic()) continue;
      const prototype = Object.getPrototypeOf(instance) as object | null;
      if (!prototype) continue;
      for (const method of this.scanner.getAllMethodNames(prototype)) {
        const fn = instance[method];
        const type = typeof fn === 'function' ? (Reflect.getMetadata(INBOX_LISTENER_METADATA, fn) as InboxEventType | undefined) : undefined;
        if (!type) continue;
        const name = `${instance.constructor.name}.${method}`;
        this.listeners.register(type, { name, call: (event) => (fn as (e: unknown) => unknown).call(instance, event) });
      }
    }
  }

  get(commandType: string): RegisteredInboxHandler | undefined {
    return this.handlers.get(commandType);
  }

  commandTypes(): string[] {
    return [...this.handlers.keys()];
  }

  private explore(): void {
    this.handlers.clear();
    const problems: string[] = [];
    const seen = new Map<string, Type<unknown>>();
    for (const wrapper of this.discovery.getProviders()) {
      const metatype = wrapper.metatype as Type<unknown> | undefined;
      // Only class providers carry the decorator; factories and values are skipped.
      if (!metatype || typeof metatype !== 'function' || wrapper.inject) continue;
      const metadata = Reflect.getMetadata(INBOX_HANDLER_METADATA, metatype) as InboxHandlerMetadata | undefined;
      if (!metadata) continue;
      const className = metatype.name;
      if (!wrapper.isDependencyTreeStatic()) {
        problems.push(
          `${className} handles "${metadata.commandType}" but is request- or transient-scoped (or depends on such a provider); ` +
            'inbox handlers run outside any request, so make it a default-scoped (singleton) provider.',
        );
        continue;
      }
      const instance = wrapper.instance as Partial<InboxCommandHandler<unknown>> | undefined;
      if (!instance || typeof instance.execute !== 'function') {
        problems.push(`${className} is decorated with @InboxHandler("${metadata.commandType}") but has no execute(command, context) method.`);
        continue;
      }
      const other = seen.get(metadata.commandType);
      if (other === metatype) continue; // the same class provided by two modules: one handler is enough
      if (other) {
        problems.push(`${other.name} and ${className} both handle "${metadata.commandType}"; a command type has exactly one handler.`);
        continue;
      }
      seen.set(metadata.commandType, metatype);
      let backoff: BackoffOptions;
      let timeoutMs: number;
      let payloadValidation: Required<PayloadValidationOptions>;
      try {
        const label = `@InboxHandler("${metadata.commandType}")`;
        backoff = resolveBackoff(metadata.backoff, this.options.backoff, `${label}.backoff`);
        timeoutMs = resolveHandlerTimeout(`${label}.timeoutMs`, metadata.timeoutMs, this.options.handlerTimeoutMs, this.options.leaseMs);
        payloadValidation = resolvePayloadValidation(`${label}.payloadValidation`, metadata.payloadValidation, this.options.payloadValidation);
      } catch (error) {
        problems.push(`${className}: ${(error as Error).message}`);
        continue;
      }
      this.handlers.set(metadata.commandType, {
        commandType: metadata.commandType,
        className,
        instance: instance as InboxCommandHandler<unknown>,
        payloadClass: metadata.payloadClass,
        maxAttempts: metadata.maxAttempts ?? this.options.maxAttempts,
        backoff,
        timeoutMs,
        payloadValidation,
        orderingKey: metadata.orderingKey as ((payload: Record<string, unknown>) => unknown) | undefined,
        onDeadLetter: metadata.onDeadLetter ?? this.options.onDeadLetter,
      });
    }
    if (problems.length > 0) {
      throw new InboxConfigurationError(`nestjs-inbox found invalid handlers:\n  - ${problems.join('\n  - ')}`);
    }
    if ([...this.handlers.values()].some((handler) => handler.payloadClass)) loadPayloadValidation();
    this.logger.log(`Registered ${this.handlers.size} inbox handler(s): ${this.commandTypes().join(', ') || '(none)'}`);
  }
}
