// Voice in and out of the web chat, when the server has the models for it (GET / says which):
// the microphone button records in the browser (MediaRecorder), sends the recording to
// /v1/audio/transcriptions and puts the text in the input; the read-aloud button on an answer
// sends its text to /v1/audio/speech and plays what comes back.

import { postForBlob, postForm } from "./api.js";

const voice = {
  speech: null, // a model that speaks, or null
  transcription: null, // a model that transcribes, or null
  recorder: null,
  playing: null, // {audio, url, button}
};

/** Remember which models speak and transcribe (from the server's description of itself). */
export function configureVoice(info) {
  const first = (list) => (Array.isArray(list) && list.length ? list[0] : null);
  voice.speech = first(info.speech_models);
  voice.transcription = first(info.transcription_models);
  const mic = document.getElementById("mic");
  mic.hidden = !voice.transcription || !navigator.mediaDevices || !window.MediaRecorder;
}

export function canSpeak() {
  return Boolean(voice.speech);
}

function recordingType() {
  for (const type of ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"]) {
    if (MediaRecorder.isTypeSupported(type)) return type;
  }
  return "";
}

const EXTENSIONS = { "audio/webm": "webm", "audio/ogg": "ogg", "audio/mp4": "m4a" };

/** Start recording, or stop and transcribe into `input`; `onError(error)` on failure. */
export async function toggleRecording(mic, input, onError) {
  if (voice.recorder) {
    voice.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    onError(new Error(`The microphone is not available: ${error.message || error}`));
    return;
  }
  const type = recordingType();
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  const pieces = [];
  recorder.addEventListener("dataavailable", (e) => {
    if (e.data && e.data.size) pieces.push(e.data);
  });
  recorder.addEventListener("stop", async () => {
    voice.recorder = null;
    for (const track of stream.getTracks()) track.stop();
    mic.classList.remove("recording");
    mic.setAttribute("aria-pressed", "false");
    mic.textContent = "Mic";
    const kind = (recorder.mimeType || type || "audio/webm").split(";")[0];
    const blob = new Blob(pieces, { type: kind });
    if (!blob.size) return;
    const form = new FormData();
    form.append("model", voice.transcription);
    form.append("file", blob, `speech.${EXTENSIONS[kind] || "webm"}`);
    mic.disabled = true;
    try {
      const heard = await postForm("/v1/audio/transcriptions", form);
      const text = (heard.text || "").trim();
      if (text) input.value = input.value ? `${input.value} ${text}` : text;
      input.focus();
    } catch (error) {
      onError(error);
    } finally {
      mic.disabled = false;
    }
  });
  voice.recorder = recorder;
  recorder.start();
  mic.classList.add("recording");
  mic.setAttribute("aria-pressed", "true");
  mic.textContent = "Stop mic";
}

function stopPlaying() {
  const playing = voice.playing;
  if (!playing) return;
  voice.playing = null;
  playing.audio.pause();
  URL.revokeObjectURL(playing.url);
  playing.button.textContent = "Read aloud";
}

/** Speak `text` (or stop, when this button's speech is playing). */
export async function readAloud(text, b, onError) {
  const mine = voice.playing && voice.playing.button === b;
  stopPlaying();
  if (mine) return;
  b.disabled = true;
  try {
    const blob = await postForBlob("/v1/audio/speech", {
      model: voice.speech,
      voice: "coral",
      input: text.slice(0, 4096),
      response_format: "wav", // the local engine writes WAV fastest; the page is local
    });
    const url = URL.createObjectURL(blob);
    const audio = new Audio(url);
    voice.playing = { audio, url, button: b };
    b.textContent = "Stop reading";
    audio.addEventListener("ended", () => {
      if (voice.playing && voice.playing.audio === audio) stopPlaying();
    });
    await audio.play();
  } catch (error) {
    stopPlaying();
    onError(error);
  } finally {
    b.disabled = false;
  }
}
