using System.CommandLine;
using System.Text;
using System.Text.Json.Nodes;
using Broker.Client;
using Spectre.Console;

namespace Broker.Ctl;

/// <summary>publish (lines from stdin or a file, in durable batches, with a progress bar on a terminal) and consume (messages as lines).</summary>
internal static class Streams
{
    private const int BatchSize = 500;

    public static Command Publish(Func<ParseResult, (BrokerClient, Output)> open)
    {
        var topic = new Argument<string>("topic");
        var file = new Option<string?>("--file", "-f") { Description = "JSON lines to publish, one message per line (default: standard input)" };
        var publish = new Command("publish", "publish each non-empty line as one message; returns once all are durable") { topic, file };
        publish.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            string name = parse.GetValue(topic)!;
            using var reader = parse.GetValue(file) is { } path ? new StreamReader(path, Encoding.UTF8) : new StreamReader(Console.OpenStandardInput(), Encoding.UTF8);
            long published = 0, first = -1, last = -1;
            var batch = new List<OutgoingMessage>(BatchSize);
            async Task FlushAsync()
            {
                if (batch.Count == 0)
                    return;
                var result = await client.PublishAsync(name, batch, cancellationToken);
                first = first < 0 ? result.FirstOffset : first;
                last = result.FirstOffset + batch.Count - 1;
                published += batch.Count;
                batch.Clear();
            }
            async Task PublishLinesAsync(Action afterBatch)
            {
                while (await reader.ReadLineAsync(cancellationToken) is { } line)
                {
                    if (line.Length == 0)
                        continue;
                    batch.Add(OutgoingMessage.FromText(line));
                    if (batch.Count == BatchSize)
                    {
                        await FlushAsync();
                        afterBatch();
                    }
                }
                await FlushAsync();
                afterBatch();
            }
            // A bar only on a terminal: piped or with --json the output is for a program, which wants the result line only.
            if (!output.Json && AnsiConsole.Profile.Capabilities.Interactive)
                await WithProgressBarAsync(reader.BaseStream, name, () => published, PublishLinesAsync);
            else
                await PublishLinesAsync(() => { });
            output.Line(published == 0 ? $"nothing to publish to {name}" : $"published {published} message(s) to {name} (offsets {first}..{last})",
                new JsonObject { ["topic"] = name, ["published"] = published, ["firstOffset"] = first, ["lastOffset"] = last });
            return 0;
        });
        return publish;
    }

    /// <summary>
    /// Runs <paramref name="publish"/> under a Spectre progress bar: for a file, the share of its bytes read (the reader's
    /// buffer ahead included); for standard input, whose length is unknown, an indeterminate bar. The description counts
    /// the messages that are durable so far.
    /// </summary>
    private static Task WithProgressBarAsync(Stream input, string topic, Func<long> published, Func<Action, Task> publish) =>
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .StartAsync(async context =>
            {
                long? length = input.CanSeek ? input.Length : null;
                var task = context.AddTask($"publishing to {topic}", maxValue: Math.Max(1, length ?? 1));
                task.IsIndeterminate = length is null;
                await publish(() =>
                {
                    task.Description = $"{published():N0} durable in {topic}";
                    if (length is not null)
                        task.Value = Math.Min(input.Position, length.Value);
                });
                task.Value = task.MaxValue;
                task.StopTask();
            });

    public static Command Consume(Func<ParseResult, (BrokerClient, Output)> open)
    {
        var topic = new Argument<string>("topic");
        var group = new Option<string>("--group", "-g") { Description = "the consumer group (created at the earliest message when new)", Required = true };
        var count = new Option<int>("--count", "-n") { Description = "stop after this many messages (default: until idle)" };
        var idle = new Option<double>("--idle") { Description = "stop after this many seconds without a message", DefaultValueFactory = _ => 2.0 };
        var noAck = new Option<bool>("--no-ack") { Description = "read without acknowledging: the messages are released at the end (a peek)" };
        var consume = new Command("consume", "print messages, one line each, acknowledging them (unless --no-ack)") { topic, group, count, idle, noAck };
        consume.SetAction(async (parse, cancellationToken) =>
        {
            var (client, output) = open(parse);
            using var _ = client;
            int wanted = parse.GetValue(count);
            bool ack = !parse.GetValue(noAck);
            await using var subscription = await client.SubscribeAsync(parse.GetValue(topic)!, parse.GetValue(group)!,
                new SubscribeOptions { MaxInFlight = wanted > 0 ? Math.Min(wanted, 1000) : 100 }, cancellationToken);
            var held = new List<ReceivedMessage>();
            int received = 0;
            while (wanted == 0 || received < wanted)
            {
                using var quiet = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                quiet.CancelAfter(TimeSpan.FromSeconds(parse.GetValue(idle)));
                ReceivedMessage message;
                try
                {
                    message = await subscription.ReceiveAsync(quiet.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    break;
                }
                received++;
                var headers = new JsonObject();
                foreach (var (key, value) in message.Headers)
                    headers[key] = value;
                output.Line($"{message.Offset}\t{message.Attempt}\t{message.PayloadText}", new JsonObject
                {
                    ["offset"] = message.Offset, ["attempt"] = message.Attempt, ["headers"] = headers, ["payload"] = message.PayloadText,
                });
                if (ack)
                    await subscription.AckAsync(message);
                else
                    held.Add(message);
            }
            if (held.Count > 0)
                await subscription.ReleaseAsync(held, cancellationToken);
            return 0;
        });
        return consume;
    }
}
