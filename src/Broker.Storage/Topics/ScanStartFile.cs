using System.Text.Json;
using Broker.Storage.Errors;
using Broker.Storage.Files;

namespace Broker.Storage.Topics;

/// <summary>
/// A small JSON file in a topic's folder naming the log address from which a start-up scan rebuilds an in-memory index
/// (the delivery schedule's, the deduplication window's). Written to a temporary file, flushed, renamed into place and
/// the folder flushed: a crash leaves the old address or the new one, never a torn file.
/// </summary>
internal static class ScanStartFile
{
    /// <summary>The address written last, or null when the file does not exist (the index was never used).</summary>
    public static long? Read(string topicDirectory, string fileName)
    {
        string path = Path.Combine(topicDirectory, fileName);
        if (!File.Exists(path))
            return null;
        return JsonSerializer.Deserialize<ScanStart>(File.ReadAllBytes(path))?.ScanFromAddress
            ?? throw new BrokerException(BrokerErrorCode.StorageFailure, $"{path} is empty or not a scan-start file");
    }

    public static void Write(string topicDirectory, string fileName, long address)
    {
        string path = Path.Combine(topicDirectory, fileName);
        string temporary = path + ".tmp";
        using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(file, new ScanStart(address));
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        DurableFolder.Flush(topicDirectory);
    }

    private sealed record ScanStart(long ScanFromAddress);
}
