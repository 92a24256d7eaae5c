using System.Diagnostics;
using System.Text;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;
using Broker.Testing;
using HdrHistogram;

// The SQS path end to end: producers send batches of 10, consumers long-poll batches of 10 and delete them in batches,
// until every message was deleted once. Usage: [--messages N] [--producers P] [--consumers C] [--payload BYTES]
//   dotnet run -c Release --project perf/Broker.Perf.Sqs -- --messages 200000
int messages = Option("--messages", 200_000);
int producers = Option("--producers", 4);
int consumers = Option("--consumers", 4);
int payloadBytes = Option("--payload", 1024);
string data = Path.Combine(Path.GetTempPath(), "broker-perf-sqs-" + Guid.NewGuid().ToString("N"));

string? httpAddress = null;
var httpKnown = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
var (process, _) = await BrokerChildProcess.StartAsync(["--port", "0", "--data", data], onLine: line =>
{
    if (line.StartsWith("broker http on ", StringComparison.Ordinal))
        httpKnown.TrySetResult(line["broker http on ".Length..].Split(' ')[0]);
});
try
{
    httpAddress = await httpKnown.Task.WaitAsync(TimeSpan.FromSeconds(30));
    using var sqs = new AmazonSQSClient(new BasicAWSCredentials("perf", "perf"), new AmazonSQSConfig
    {
        ServiceURL = httpAddress,
        AuthenticationRegion = "us-east-1",
        MaxConnectionsPerServer = producers + consumers + 4,
    });
    string url = (await sqs.CreateQueueAsync("perf-sqs")).QueueUrl;
    string body = new('x', payloadBytes);
    var sendLatency = new LongHistogram(TimeSpan.FromSeconds(60).Ticks, 3);
    var endToEnd = new LongHistogram(TimeSpan.FromSeconds(60).Ticks, 3);
    long sent = 0, deleted = 0;
    var brokerCpuBefore = Broker.Perf.ProcStat.CpuTime(process.Id);
    var runnerCpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
    var clock = Stopwatch.StartNew();

    var producing = Enumerable.Range(0, producers).Select(p => Task.Run(async () =>
    {
        while (true)
        {
            long first = Interlocked.Add(ref sent, 10) - 10;
            if (first >= messages)
                return;
            int count = (int)Math.Min(10, messages - first);
            long started = Stopwatch.GetTimestamp();
            var entries = Enumerable.Range(0, count).Select(i => new SendMessageBatchRequestEntry($"m{i}", body)
            {
                MessageAttributes = new() { ["sent"] = new MessageAttributeValue { DataType = "Number", StringValue = started.ToString(System.Globalization.CultureInfo.InvariantCulture) } },
            }).ToList();
            var answer = await sqs.SendMessageBatchAsync(url, entries);
            if (answer.Failed is { Count: > 0 })
                throw new InvalidOperationException($"send failed: {answer.Failed[0].Code} {answer.Failed[0].Message}");
            lock (sendLatency)
                sendLatency.RecordValue(Stopwatch.GetElapsedTime(started).Ticks);
        }
    })).ToList();

    var consuming = Enumerable.Range(0, consumers).Select(c => Task.Run(async () =>
    {
        while (Interlocked.Read(ref deleted) < messages)
        {
            var answer = await sqs.ReceiveMessageAsync(new ReceiveMessageRequest
            {
                QueueUrl = url, MaxNumberOfMessages = 10, WaitTimeSeconds = 1, MessageAttributeNames = ["sent"],
            });
            if (answer.Messages is not { Count: > 0 } received)
                continue;
            var result = await sqs.DeleteMessageBatchAsync(url, received.Select((m, i) => new DeleteMessageBatchRequestEntry($"d{i}", m.ReceiptHandle)).ToList());
            if (result.Failed is { Count: > 0 })
                throw new InvalidOperationException($"delete failed: {result.Failed[0].Code} {result.Failed[0].Message}");
            long now = Stopwatch.GetTimestamp();
            lock (endToEnd)
            {
                foreach (var message in received)
                    endToEnd.RecordValue(Stopwatch.GetElapsedTime(long.Parse(message.MessageAttributes["sent"].StringValue, System.Globalization.CultureInfo.InvariantCulture), now).Ticks);
            }
            Interlocked.Add(ref deleted, received.Count);
        }
    })).ToList();

    await Task.WhenAll(producing);
    double sendSeconds = clock.Elapsed.TotalSeconds;
    await Task.WhenAll(consuming);
    double totalSeconds = clock.Elapsed.TotalSeconds;
    double brokerCpu = (Broker.Perf.ProcStat.CpuTime(process.Id) - brokerCpuBefore).TotalSeconds;
    double runnerCpu = (Process.GetCurrentProcess().TotalProcessorTime - runnerCpuBefore).TotalSeconds;
    Console.WriteLine($"SQS path: {messages:N0} x {payloadBytes} B, {producers} producers (SendMessageBatch of 10), {consumers} consumers (ReceiveMessage 10 + DeleteMessageBatch)");
    Console.WriteLine($"  sent (durable)        {messages / sendSeconds,10:N0} msg/s");
    Console.WriteLine($"  end to end (deleted)  {messages / totalSeconds,10:N0} msg/s");
    Console.WriteLine($"  SendMessageBatch      p50 {Ms(sendLatency, 50)} ms  p99 {Ms(sendLatency, 99)} ms  max {Ms(sendLatency, 100)} ms");
    Console.WriteLine($"  send -> deleted       p50 {Ms(endToEnd, 50)} ms  p99 {Ms(endToEnd, 99)} ms  max {Ms(endToEnd, 100)} ms");
    // Both share the two cores: the AWS SDK's signing and serialization are the runner's share.
    Console.WriteLine($"  CPU s per million     broker {brokerCpu / messages * 1e6:N1}  runner (AWS SDK) {runnerCpu / messages * 1e6:N1}");
}
finally
{
    process.Kill(entireProcessTree: true);
    await process.WaitForExitAsync();
    Directory.Delete(data, recursive: true);
}

int Option(string name, int defaultValue)
{
    int index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? int.Parse(args[index + 1], System.Globalization.CultureInfo.InvariantCulture) : defaultValue;
}

static string Ms(LongHistogram histogram, double percentile) =>
    (TimeSpan.FromTicks(histogram.GetValueAtPercentile(percentile)).TotalMilliseconds).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
