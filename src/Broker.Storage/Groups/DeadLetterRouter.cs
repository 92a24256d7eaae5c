using System.Globalization;
using Broker.Storage.Logs;
using Broker.Storage.Topics;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Groups;

/// <summary>
/// Moves a group's dead letters to its dead-letter topic (created on first use): the full original message plus
/// headers saying where it came from and why. Only once the dead letter is durable there is the message recorded as
/// done for the group, so a crash in between can duplicate a dead letter but never lose one. A failed publish (for
/// example a full disk) is retried every second.
/// </summary>
internal sealed partial class DeadLetterRouter(ConsumerGroup group, Topic source, string deadLetterTopic,
    Func<string, CancellationToken, Task<Topic>> topics, TimeProvider time, ILogger logger)
{
    /// <summary>
    /// Header names added to a dead letter (docs/semantics.md), all under <see cref="ReservedHeaders.Prefix"/>, which
    /// publishes may not use: the original headers are kept whatever their names.
    /// </summary>
    public static class Headers
    {
        public const string Prefix = ReservedHeaders.Prefix + "dlq-";
        public const string OriginalTopic = Prefix + "original-topic";
        public const string OriginalOffset = Prefix + "original-offset";
        public const string OriginalPublishTime = Prefix + "original-publish-unix-ms";
        public const string Group = Prefix + "group";
        public const string Reason = Prefix + "reason";
        public const string DeliveryCount = Prefix + "delivery-count";
        public const string FirstDeliveryTime = Prefix + "first-delivery-unix-ms";
        public const string LastDeliveryTime = Prefix + "last-delivery-unix-ms";
        public const string LastError = Prefix + "last-error";

        /// <summary>
        /// The original-topic header of dead letters written before the broker's headers were reserved; their other
        /// headers then started <see cref="LegacyPrefix"/> (and the producer's own such headers had been dropped).
        /// </summary>
        public const string LegacyOriginalTopic = "dlq-original-topic";
        public const string LegacyPrefix = "dlq-";
    }

    private readonly AsyncSignal _wake = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _startLock = new();
    private Task? _loop;

    public void Wake()
    {
        lock (_startLock)
        {
            if (_stop.IsCancellationRequested)
                return;
            _loop ??= Task.Run(RunAsync);
        }
        _wake.Set();
    }

    public async Task StopAsync()
    {
        Task? loop;
        lock (_startLock)
        {
            _stop.Cancel();
            loop = _loop;
        }
        if (loop is not null)
            await loop.ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
    }

    private async Task RunAsync()
    {
        // A topic that closes or fails stops its router: a failed topic is reopened with a router of its own.
        using var stopping = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token, source.Closing);
        var stop = stopping.Token;
        while (!stop.IsCancellationRequested)
        {
            var woken = _wake.WaitTask;
            bool failed = false;
            while (!failed && !stop.IsCancellationRequested && group.TryTakeDeadLetter(out var deadLetter))
            {
                try
                {
                    await WriteAsync(deadLetter, stop).ConfigureAwait(false);
                }
                catch (Exception error)
                {
                    group.ReturnDeadLetter(deadLetter);
                    failed = true;
                    if (!stop.IsCancellationRequested)
                        Events.RoutingFailed(logger, source.Name, group.Name, deadLetter.Message.Location.Offset, deadLetterTopic, error);
                    continue;
                }
                try
                {
                    await group.CompleteDeadLetterAsync(deadLetter).ConfigureAwait(false);
                }
                catch (Exception error)
                {
                    // The letter is written and the group counts the message done; only the record saying so failed
                    // (its group-state log failed). Not retried, which would write the letter again; after a restart
                    // the recorded delivery count routes it once more (a dead letter at most twice).
                    Events.RoutingFailed(logger, source.Name, group.Name, deadLetter.Message.Location.Offset, deadLetterTopic, error);
                }
            }
            try
            {
                if (failed)
                    await Task.Delay(TimeSpan.FromSeconds(1), time, stop).ConfigureAwait(false);
                else
                    await woken.WaitAsync(stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Writes the dead letter durably to the dead-letter topic (or reports the message lost if it cannot be read).</summary>
    private async Task WriteAsync(DeadLetter deadLetter, CancellationToken stop)
    {
        var waiting = deadLetter.Message;
        var original = await source.TryReadAsync(waiting.Location.Address, stop).ConfigureAwait(false);
        if (original is null)
        {
            // Damaged on disk since it was read: nothing is left to dead-letter. Retrying would fail every second
            // forever; it is reported as lost and done for the group.
            source.ReportLostOffsets(group.Name, waiting.Location.Offset, waiting.Location.Offset + 1);
            return;
        }
        // The producer's headers cannot be reserved ones (publishes may not use them), so all of them are kept. A message
        // that already is a dead letter (a group on a dead-letter topic gave up on it) has its earlier story replaced.
        var headers = original.Headers.Where(h => !ReservedHeaders.IsReserved(h.Key) || ReservedHeaders.IsCopied(h.Key)).ToList();
        headers.Add(new(Headers.OriginalTopic, source.Name));
        headers.Add(new(Headers.OriginalOffset, Format(original.Offset)));
        headers.Add(new(Headers.OriginalPublishTime, Format(original.PublishTimeUnixMs)));
        headers.Add(new(Headers.Group, group.Name));
        headers.Add(new(Headers.Reason, deadLetter.Reason));
        headers.Add(new(Headers.DeliveryCount, Format(waiting.Attempts)));
        headers.Add(new(Headers.FirstDeliveryTime, Format(waiting.FirstDeliveredUnixMs)));
        headers.Add(new(Headers.LastDeliveryTime, Format(waiting.LastDeliveredUnixMs)));
        if (waiting.LastError is { Length: > 0 } lastError)
            headers.Add(new(Headers.LastError, lastError));

        var target = await topics(deadLetterTopic, stop).ConfigureAwait(false);
        await target.AppendAsync([new AppendMessage(original.Key, headers, original.Payload)], trusted: true).ConfigureAwait(false);
    }

    private static string Format(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static partial class Events
    {
        [LoggerMessage(EventId = 3301, Level = LogLevel.Warning,
            Message = "Topic {Topic}, group {Group}: routing offset {Offset} to dead-letter topic {DeadLetterTopic} failed; retrying in a second")]
        public static partial void RoutingFailed(ILogger logger, string topic, string group, long offset, string deadLetterTopic, Exception error);
    }
}
